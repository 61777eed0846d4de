"""A small Docker Engine API client on the standard library, for the calls an exec makes.

`sandboxctl exec` is one short process per command: importing the docker SDK (and requests, urllib3 under
it) costs more than the whole exec round trip. This client speaks HTTP/1.1 to the engine itself, over the
unix socket (or plain tcp), for exactly what DockerProvider.exec needs: inspect a container, create an exec,
start it attached and demultiplex its output as it arrives, and read its exit code. Everything else stays
on the SDK, imported when first used.

It only handles what it can do exactly like the SDK would: ``engine_from_environ`` returns None for a
configuration it does not speak (TLS, ssh://, a path under tcp://...), and the provider then runs the same
calls through the SDK with ``SdkExecCalls``, the one other implementation of ``ExecCalls``: a thin shim
over the SDK's low-level client, kept because TLS and ssh:// engines (and a client handed in) must still
work. Its errors carry the engine's status and message, which the provider maps the way it maps the
SDK's (404: ProviderLost; no engine: the start-the-engine hint).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any, Protocol

# Docker 20.10's API version: every engine since serves it, so there is no version round trip per process
# (the SDK asks the engine first); what the exec calls send and read is the same in every later version.
API_VERSION = "1.41"
DEFAULT_SOCKET = "/var/run/docker.sock"
# The SDK's default timeout for connecting and for each request (not for an exec's output stream).
REQUEST_TIMEOUT_S = 60.0
_RECV = 64 * 1024
# A status line and headers larger than this are not an engine talking.
_MAX_HEAD = 64 * 1024
# The stream header of a non-tty attach: stream id (0 stdin, 1 stdout, 2 stderr), three zero bytes, the
# payload size as a big-endian uint32.
_FRAME_HEADER = 8
_STDOUT, _STDERR = 1, 2
_PATH_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class OutputStream(Protocol):
    """An attached exec's demultiplexed output, ``(stdout, None)`` or ``(None, stderr)`` chunks."""

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]: ...

    def __next__(self) -> tuple[bytes | None, bytes | None]: ...

    def close(self) -> None: ...


class ExecCalls(Protocol):
    """The engine calls of an exec: DockerEngine makes them on the standard library, SdkExecCalls with
    the SDK (same calls, same results)."""

    def inspect_container(self, ref: str) -> dict[str, Any]: ...

    def exec_create(
        self,
        ref: str,
        cmd: Sequence[str],
        *,
        user: str = "",
        environment: Sequence[str] | None = None,
        workdir: str | None = None,
    ) -> str: ...

    def exec_stream(self, exec_id: str) -> OutputStream: ...

    def exec_run(self, exec_id: str) -> None: ...

    def exec_inspect(self, exec_id: str) -> dict[str, Any]: ...


class EngineUnreachable(Exception):
    """No engine answers at the configured address, or the connection broke before it answered."""


class EngineTimeout(Exception):
    """The engine took a connection but did not answer within REQUEST_TIMEOUT_S (the SDK's ReadTimeout)."""


class EngineAPIError(Exception):
    """The engine answered with an error status; ``explanation`` is its message (what the SDK's
    APIError.explanation holds)."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(f"{status}: {explanation}")
        self.status_code = status
        self.explanation = explanation


def engine_from_environ(environ: Mapping[str, str]) -> DockerEngine | None:
    """The engine the SDK's ``docker.from_env()`` would reach, or None when this client cannot reach it
    the same way (TLS, ssh://, npipe://, a base path): the caller uses the SDK then."""
    # As the SDK reads them: an empty DOCKER_TLS_VERIFY means off, any other value (even "0") means on.
    if environ.get("DOCKER_CERT_PATH") or environ.get("DOCKER_TLS_VERIFY", "") != "":
        return None
    host = environ.get("DOCKER_HOST", "").strip()
    if not host or host == "unix://":
        return DockerEngine(unix_path=DEFAULT_SOCKET)
    if host.startswith("unix:///"):
        return DockerEngine(unix_path=host.removeprefix("unix://").rstrip("/") or DEFAULT_SOCKET)
    for scheme in ("tcp://", "http://"):
        if host.startswith(scheme):
            address = _host_port(host.removeprefix(scheme).removesuffix("/"))
            return None if address is None else DockerEngine(tcp=address)
    return None


def _host_port(netloc: str) -> tuple[str, int] | None:
    """``host:port`` (or ``[v6]:port``; an empty host is 127.0.0.1, as the SDK has it); None for anything
    else (no port, a path, credentials), which the SDK handles or refuses itself."""
    if any(c in netloc for c in "/?#@"):
        return None
    host, sep, port = netloc.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None
    return host or "127.0.0.1", int(port)


class DockerEngine:
    """The engine at one address; a connection per request, so one instance serves any number of threads."""

    def __init__(self, *, unix_path: str | None = None, tcp: tuple[str, int] | None = None) -> None:
        if (unix_path is None) == (tcp is None):
            raise ValueError("give exactly one of unix_path and tcp")
        self._unix_path = unix_path
        self._tcp = tcp
        if tcp is None:
            self._host_header = "localhost"
        else:
            self._host_header = f"[{tcp[0]}]:{tcp[1]}" if ":" in tcp[0] else f"{tcp[0]}:{tcp[1]}"

    @property
    def address(self) -> str:
        if self._tcp is not None:
            return f"tcp://{self._host_header}"
        return f"unix://{self._unix_path}"

    # ----------------------------------------------------------------------------- the exec calls

    def inspect_container(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self._json("GET", f"/containers/{_quote(ref)}/json")
        return found

    def exec_create(
        self,
        ref: str,
        cmd: Sequence[str],
        *,
        user: str = "",
        environment: Sequence[str] | None = None,
        workdir: str | None = None,
    ) -> str:
        """The new exec's id; the body is the one the SDK's ``exec_create`` sends."""
        body: dict[str, Any] = {
            "Container": ref,
            "User": user,
            "Privileged": False,
            "Tty": False,
            "AttachStdin": False,
            "AttachStdout": True,
            "AttachStderr": True,
            "Cmd": list(cmd),
            "Env": list(environment or []),
        }
        if workdir is not None:
            body["WorkingDir"] = workdir
        created = self._json("POST", f"/containers/{_quote(ref)}/exec", body)
        return str(created["Id"])

    def exec_stream(self, exec_id: str) -> ExecOutput:
        """Start the exec attached: its output, demultiplexed, as the engine sends it."""
        sock, pending = self._start(exec_id)
        return ExecOutput(sock, pending)

    def exec_run(self, exec_id: str) -> None:
        """Start the exec attached and return once it ended (its output is read and dropped)."""
        sock, _ = self._start(exec_id)
        try:
            sock.settimeout(REQUEST_TIMEOUT_S)
            while sock.recv(_RECV):
                pass
        except OSError as exc:
            raise self._broken(exc) from exc
        finally:
            sock.close()

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self._json("GET", f"/exec/{_quote(exec_id)}/json")
        return state

    # ----------------------------------------------------------------------------- HTTP

    def _start(self, exec_id: str) -> tuple[socket.socket, bytes]:
        """POST exec start asking to take the connection over (as the SDK does); the socket, now carrying
        the raw multiplexed stream, and whatever of it came with the response head."""
        sock = self._send("POST", f"/exec/{_quote(exec_id)}/start", {"Detach": False, "Tty": False}, True)
        try:
            status, headers, rest = self._read_head(sock)
            if status in (101, 200):
                sock.settimeout(None)  # a command may be silent for as long as its timeout allows
                return sock, rest
            raise self._api_error(status, self._read_body(sock, headers, rest))
        except BaseException:
            sock.close()
            raise

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        sock = self._send(method, path, body)
        try:
            status, headers, rest = self._read_head(sock)
            data = self._read_body(sock, headers, rest) if status not in (204, 304) else b""
        finally:
            sock.close()
        if status >= 400:
            raise self._api_error(status, data)
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise EngineUnreachable(f"{self.address} does not answer like a Docker engine") from None

    def _connect(self) -> socket.socket:
        try:
            if self._tcp is not None:
                sock = socket.create_connection(self._tcp, timeout=REQUEST_TIMEOUT_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(REQUEST_TIMEOUT_S)
                sock.connect(self._unix_path or DEFAULT_SOCKET)
            except BaseException:
                sock.close()
                raise
            return sock
        except OSError as exc:
            raise EngineUnreachable(f"cannot connect to {self.address}: {_reason(exc)}") from exc

    def _send(self, method: str, path: str, body: Any, upgrade: bool = False) -> socket.socket:
        payload = b"" if body is None else json.dumps(body).encode()
        head = [
            f"{method} /v{API_VERSION}{path} HTTP/1.1",
            f"Host: {self._host_header}",
            "User-Agent: sandbox-lifecycle",
            "Accept-Encoding: identity",
            f"Content-Length: {len(payload)}",
        ]
        if body is not None:
            head.append("Content-Type: application/json")
        head += ["Connection: Upgrade", "Upgrade: tcp"] if upgrade else ["Connection: close"]
        sock = self._connect()
        try:
            sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + payload)
        except OSError as exc:
            sock.close()
            raise EngineUnreachable(f"the connection to {self.address} broke: {_reason(exc)}") from exc
        return sock

    def _read_head(self, sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
        buffer = b""
        try:
            while (end := buffer.find(b"\r\n\r\n")) < 0:
                if len(buffer) > _MAX_HEAD:
                    raise EngineUnreachable(f"{self.address} does not answer like a Docker engine")
                chunk = sock.recv(_RECV)
                if not chunk:
                    raise EngineUnreachable(f"{self.address} closed the connection without an answer")
                buffer += chunk
        except OSError as exc:
            raise self._broken(exc) from exc
        lines = buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise EngineUnreachable(f"{self.address} does not answer like a Docker engine: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers, buffer[end + 4 :]

    def _read_body(self, sock: socket.socket, headers: Mapping[str, str], rest: bytes) -> bytes:
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return _dechunk(sock, rest)
            length = headers.get("content-length")
            if length is not None and length.isdigit():
                return _read_exactly(sock, rest, int(length))
            return _read_to_end(sock, rest)  # we sent Connection: close
        except OSError as exc:
            raise self._broken(exc) from exc

    def _broken(self, exc: OSError) -> Exception:
        if isinstance(exc, TimeoutError):  # the engine is there, it did not answer in time
            return EngineTimeout(f"{self.address} did not answer within {REQUEST_TIMEOUT_S:g}s")
        return EngineUnreachable(f"the connection to {self.address} broke: {_reason(exc)}")

    @staticmethod
    def _api_error(status: int, data: bytes) -> EngineAPIError:
        text = data.decode("utf-8", "replace").strip()
        with suppress(ValueError, AttributeError):
            text = str(json.loads(text).get("message") or text)
        return EngineAPIError(status, text)


class ExecOutput:
    """An attached exec's output: ``(stdout, None)`` or ``(None, stderr)`` chunks, each handed on as
    soon as it is read (a frame the engine sends in parts comes in parts), until the exec's streams close.

    ``close`` may be called from another thread while one is blocked reading: it shuts the socket down,
    which ends the read (a plain close would leave it blocked)."""

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        self._sock = sock
        self._frames = self._demux(pending)

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        return self

    def __next__(self) -> tuple[bytes | None, bytes | None]:
        return next(self._frames)

    def close(self) -> None:
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _demux(self, buffer: bytes) -> Iterator[tuple[bytes | None, bytes | None]]:
        # An offset into the last read instead of slicing it: many small frames in one read stay linear.
        sock, pos = self._sock, 0
        try:
            while True:
                while len(buffer) - pos < _FRAME_HEADER:
                    chunk = sock.recv(_RECV)
                    if not chunk:
                        if len(buffer) > pos:
                            raise EngineUnreachable("the engine closed an exec's output stream mid-frame")
                        return
                    buffer, pos = buffer[pos:] + chunk, 0
                stream = buffer[pos]
                size = int.from_bytes(buffer[pos + 4 : pos + _FRAME_HEADER], "big")
                if stream not in (_STDOUT, _STDERR):
                    raise EngineUnreachable(f"the engine sent output of unknown stream {stream}")
                pos += _FRAME_HEADER
                while size:
                    if pos == len(buffer):
                        buffer, pos = sock.recv(_RECV), 0
                        if not buffer:
                            raise EngineUnreachable("the engine closed an exec's output stream mid-frame")
                    end = min(len(buffer), pos + size)
                    data = buffer[pos:end]
                    size -= end - pos
                    pos = end
                    yield (data, None) if stream == _STDOUT else (None, data)
        except OSError as exc:
            raise EngineUnreachable(f"an exec's output stream broke: {_reason(exc)}") from exc
        finally:
            sock.close()


def _read_exactly(sock: socket.socket, rest: bytes, size: int) -> bytes:
    parts, have = [rest[:size]], len(rest[:size])
    while have < size:
        chunk = sock.recv(min(_RECV, size - have))
        if not chunk:
            raise EngineUnreachable("the engine closed the connection mid-answer")
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _read_to_end(sock: socket.socket, rest: bytes) -> bytes:
    parts = [rest]
    while chunk := sock.recv(_RECV):
        parts.append(chunk)
    return b"".join(parts)


def _dechunk(sock: socket.socket, rest: bytes) -> bytes:
    """A chunked body: size line (hex, maybe with extensions), data, CRLF; a zero size ends it."""
    buffer, body = rest, list[bytes]()
    while True:
        while (eol := buffer.find(b"\r\n")) < 0:
            chunk = sock.recv(_RECV)
            if not chunk:
                raise EngineUnreachable("the engine closed the connection mid-answer")
            buffer += chunk
        size = int(buffer[:eol].split(b";")[0].strip() or b"0", 16)
        buffer = buffer[eol + 2 :]
        if size == 0:
            return b"".join(body)
        while len(buffer) < size + 2:
            chunk = sock.recv(_RECV)
            if not chunk:
                raise EngineUnreachable("the engine closed the connection mid-answer")
            buffer += chunk
        body.append(buffer[:size])
        buffer = buffer[size + 2 :]


def _quote(segment: str) -> str:
    """A path segment percent-encoded (ids and names are plain; anything else must not change the path)."""
    raw = segment.encode()
    if all(b in _PATH_SAFE for b in raw):
        return segment
    return "".join(chr(b) if b in _PATH_SAFE else f"%{b:02X}" for b in raw)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class SdkExecCalls:
    """The exec calls through the SDK's low-level client (``APIClient``, passed in so that this module
    never imports the SDK): for what DockerEngine does not speak (TLS, ssh://) and for a client handed in."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def inspect_container(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self._api.inspect_container(ref)
        return found

    def exec_create(
        self,
        ref: str,
        cmd: Sequence[str],
        *,
        user: str = "",
        environment: Sequence[str] | None = None,
        workdir: str | None = None,
    ) -> str:
        created = self._api.exec_create(ref, cmd, user=user, environment=environment, workdir=workdir)
        return str(created["Id"])

    def exec_stream(self, exec_id: str) -> OutputStream:
        stream: OutputStream = self._api.exec_start(exec_id, stream=True, demux=True)
        return stream

    def exec_run(self, exec_id: str) -> None:
        self._api.exec_start(exec_id)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self._api.exec_inspect(exec_id)
        return state
