"""The model-API gateway: a sandbox's calls come in with its token, go out with the real key.

A sandbox gets ``ANTHROPIC_BASE_URL`` pointing here and a per-sandbox token (see ``tokens``) as
``ANTHROPIC_API_KEY``. For each request the gateway

* checks the token (``x-api-key``, or ``Authorization: Bearer``): unknown, malformed or revoked is a 401
  with an Anthropic-shaped JSON error naming why, so the agent CLI shows a reason;
* puts the real key from ``upstream.json`` where the token was, strips hop-by-hop headers, and forwards
  to the upstream (HTTPS with certificate verification; plain HTTP only if ``upstream.json`` says so,
  which the backend writes for loopback upstreams only);
* relays the response as it arrives: each piece read from the upstream is written and drained before
  the next read, so server-sent events reach the sandbox when the model produces them, not when the
  stream ends;
* touches ``activity/<sandbox id>`` (a model call is the sandbox's activity) and adds the request to
  ``counters/<sandbox id>.json``.

Neither the key nor a token is ever logged or put in an error message. HTTP/1.1 only, keep-alive on
both sides (upstream connections are pooled, so a model call does not pay a TLS handshake each time).

Standard library only (see the package docstring).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .tokens import MALFORMED, check_token

log = logging.getLogger("sandbox_lifecycle.egress.gateway")

# Headers that belong to one connection, not to the message (RFC 9110 7.6.1), plus the two that carry
# the credential, which the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization"})

MAX_HEAD_BYTES = 64 * 1024
# The Messages API refuses requests over 32 MB; the body is held whole so a stale pooled connection
# can be retried on a fresh one.
MAX_BODY_BYTES = 64 * 1024 * 1024
_READ = 64 * 1024
# What a sandbox may do with the key: call the model. The key can do more (files, batches, admin
# endpoints that list what the rest of the organisation stored); none of that is forwarded.
MODEL_CALLS = (
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/*"),
)
MAX_INTERIM_RESPONSES = 10
POOL_PER_UPSTREAM = 8
POOL_IDLE_SECONDS = 20.0


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def wants_close(self) -> bool:
        connection = (self.header("connection") or "").lower()
        return self.version == "HTTP/1.0" or "close" in connection


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    base_path: str
    api_key: str = field(repr=False)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_upstream(url: str, api_key: str) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstream URL must be http(s)://host[:port][/path], got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), api_key)


GIT_PREFIX = "/git/"
_GIT_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?")
_GIT_PATH = re.compile(r"/[A-Za-z0-9._~/-]{1,1024}/(info/refs|git-upload-pack|git-receive-pack)")
_GIT_SERVICES = ("service=git-upload-pack", "service=git-receive-pack")


def parse_git_route(method: str, target: str) -> tuple[str, str] | None:
    """``(host, path with query)`` of a smart-HTTP git request under GIT_PREFIX, or None."""
    host, sep, rest = target[len(GIT_PREFIX) :].partition("/")
    path, _, query = ("/" + rest).partition("?")
    found = _GIT_PATH.fullmatch(path)
    if not sep or not _GIT_HOST.fullmatch(host) or found is None or "/../" in path + "/" or "/./" in path:
        return None
    if found.group(1) == "info/refs":
        ok = method == "GET" and query in _GIT_SERVICES
    else:
        ok = method == "POST" and not query
    return (host, "/" + rest) if ok else None


def is_model_call(method: str, target: str) -> bool:
    """Whether the request is one of MODEL_CALLS (the query string aside; ``*`` is one path segment)."""
    path = target.split("?", 1)[0]
    for allowed_method, allowed in MODEL_CALLS:
        if method != allowed_method:
            continue
        if allowed.endswith("/*"):
            prefix = allowed[:-1]
            rest = path[len(prefix) :]
            if path.startswith(prefix) and rest and "/" not in rest:
                return True
        elif path == allowed:
            return True
    return False


def _error_body(kind: str, message: str) -> bytes:
    # The Messages API's error shape, so an SDK or the agent CLI shows the message as it would its own.
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _filtered(headers: Iterable[tuple[str, str]], drop: frozenset[str]) -> list[tuple[str, str]]:
    """Headers without hop-by-hop ones, without those ``Connection`` names, and without ``drop``."""
    headers = list(headers)
    named = {
        token.strip().lower()
        for key, value in headers
        if key.lower() == "connection"
        for token in value.split(",")
    }
    return [(k, v) for k, v in headers if (low := k.lower()) not in HOP_BY_HOP | drop and low not in named]


async def _read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """The lines of a message head, or None on a clean end of stream before any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise _BadRequest(400, "the request head ended early") from None
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes") from None
    return raw.decode("latin-1").split("\r\n")[:-2]


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _BadRequest(400, "a header line is malformed")
        headers.append((name, value.strip()))
    return headers


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    values = {v for k, v in headers if k.lower() == "content-length"}
    if not values:
        return None
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise _BadRequest(400, "Content-Length is not one whole number")
    return int(value)


def _is_chunked(headers: list[tuple[str, str]]) -> bool:
    codings = [
        c.strip().lower() for k, v in headers if k.lower() == "transfer-encoding" for c in v.split(",")
    ]
    if not codings:
        return False
    if codings != ["chunked"]:
        raise _BadRequest(501, "only the chunked transfer coding is supported")
    return True


async def _read_chunked_body(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size_total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadRequest(400, "a chunk size is malformed") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers of a request are dropped
            return b"".join(parts)
        size_total += size
        if size_total > limit:
            raise _BadRequest(413, f"the request body is larger than {limit} bytes")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class _Pool:
    """Idle upstream connections per (scheme, host, port), newest first, each dropped after a while."""

    def __init__(self) -> None:
        self._idle: dict[
            tuple[str, str, int], list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]]
        ] = {}

    def take(self, key: tuple[str, str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        idle = self._idle.get(key, [])
        now = time.monotonic()
        while idle:
            since, reader, writer = idle.pop()
            if now - since < POOL_IDLE_SECONDS and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    def give(
        self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= POOL_PER_UPSTREAM:
            writer.close()
            return
        idle.append((time.monotonic(), reader, writer))

    def close(self) -> None:
        for idle in self._idle.values():
            for _since, _reader, writer in idle:
                writer.close()
        self._idle.clear()


class Gateway:
    """Serves the gateway for one deployment's state directory (see the module docstring).

    ``upstream_override`` replaces the URL in ``upstream.json`` (the key still comes from there): tests
    point it at a loopback upstream. ``ssl_context`` replaces the default verifying context.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        upstream_override: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        idle_timeout: float = 120.0,
        read_timeout: float = 600.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._override = upstream_override
        self._ssl = ssl_context or ssl.create_default_context()
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        # How long the upstream may stay silent (before its answer's head, or between two pieces of it)
        # before the call is given up: a long generation without streaming takes minutes.
        self._read_timeout = read_timeout
        self._pool = _Pool()
        self._upstream: Upstream | None = None
        self._upstream_stamp: tuple[int, int] | None = None
        # Client connections being served, so closing the gateway ends idle keep-alive ones too.
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES)
        log.info("gateway: listening on %s:%d", host, port)
        return server

    def close(self) -> None:
        """Drop pooled upstream connections and cancel the client connections being served."""
        self._pool.close()
        for task in self._connections:
            task.cancel()

    async def aclose(self, server: asyncio.Server) -> None:
        """Stop ``server`` (from :meth:`start`) and wait until every connection of it has ended."""
        server.close()
        self.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    # --- one client connection ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            for _ in range(100_000):  # bounded keep-alive: a client reconnects after this many requests
                try:
                    request = await asyncio.wait_for(self._read_request(reader, writer), self._idle_timeout)
                except TimeoutError:
                    return
                except _BadRequest as e:
                    await self._reply(writer, e.status, "invalid_request_error", e.message, close=True)
                    return
                if request is None:
                    return
                keep = await self._handle(request, writer)
                if not keep or request.wants_close():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Request | None:
        lines = await _read_head(reader)
        if lines is None:
            return None
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1].startswith("/") or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(400, "the request line is not METHOD /path HTTP/1.1")
        headers = _parse_headers(lines[1:])
        request = _Request(parts[0], parts[1], parts[2], headers)
        chunked = _is_chunked(headers)
        length = _content_length(headers)
        if chunked and length is not None:
            raise _BadRequest(400, "a request may not carry both Content-Length and Transfer-Encoding")
        if length is not None and length > MAX_BODY_BYTES:
            raise _BadRequest(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        if (request.header("expect") or "").lower() == "100-continue" and (chunked or length):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if chunked:
            request.body = await _read_chunked_body(reader, MAX_BODY_BYTES)
        elif length:
            request.body = await reader.readexactly(length)
        return request

    async def _reply(
        self, writer: asyncio.StreamWriter, status: int, kind: str, message: str, *, close: bool = False
    ) -> None:
        body = _error_body(kind, message)
        connection = "close" if close else "keep-alive"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: {connection}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    # --- one request -------------------------------------------------------------------------------------

    async def _handle(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the client connection cannot carry another."""
        if request.method == "GET" and request.target == "/healthz":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n")
            writer.write(b'{"ok":true}')
            await writer.drain()
            return True
        token, bearer = self._presented_token(request)
        if token is None:
            await self._reply(
                writer, 401, "authentication_error", "no gateway token: send the sandbox's ANTHROPIC_API_KEY"
            )
            return True
        sandbox_id, why = check_token(self.state_dir, token)
        if sandbox_id is None:
            message = (
                "the gateway token is malformed (it is not a sandbox's ANTHROPIC_API_KEY)"
                if why == MALFORMED
                else "the gateway token is revoked or unknown: its sandbox is suspended, destroyed or "
                "expired, or was resumed with a new token"
            )
            await self._reply(writer, 401, "authentication_error", f"{message} ({why})")
            return True
        if request.target.startswith(GIT_PREFIX):
            return await self._git(request, sandbox_id, writer)
        if not is_model_call(request.method, request.target):
            await self._reply(
                writer,
                403,
                "permission_error",
                f"the gateway forwards model calls only ({', '.join(f'{m} {p}' for m, p in MODEL_CALLS)}); "
                f"not {request.method} {request.target.split('?', 1)[0]}",
            )
            return True
        try:
            upstream = self._current_upstream()
        except (OSError, ValueError, KeyError) as e:
            log.error("gateway: upstream.json is unusable: %s", type(e).__name__)
            await self._reply(writer, 503, "api_error", "the gateway has no usable upstream configuration")
            return True
        auth = ("authorization", f"Bearer {upstream.api_key}") if bearer else ("x-api-key", upstream.api_key)
        return await self._call(
            sandbox_id, request, upstream, request.target, [auth], CREDENTIAL_HEADERS, writer
        )

    async def _call(
        self,
        sandbox_id: str,
        request: _Request,
        upstream: Upstream,
        target: str,
        auth: list[tuple[str, str]],
        drop: frozenset[str],
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Forward one authenticated call and book it: activity before and after, counters, a log line."""
        self._touch(sandbox_id)
        status, sent, keep = 0, 0, True
        try:
            status, sent, keep = await self._forward(request, upstream, target, auth, drop, writer)
        finally:
            self._touch(sandbox_id)
            self._count(sandbox_id, len(request.body), sent, status)
            log.info(
                "gateway: sandbox %s %s %s -> %s (%d bytes in, %d out)",
                sandbox_id,
                request.method,
                request.target.split("?", 1)[0],
                status or "no answer",
                len(request.body),
                sent,
            )
        return keep

    @staticmethod
    def _presented_token(request: _Request) -> tuple[str | None, bool]:
        """The token and whether it came as a bearer token (then the key goes back the same way)."""
        key = request.header("x-api-key")
        if key:
            return key.strip(), False
        auth = request.header("authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), True
        return None, False

    def _current_upstream(self) -> Upstream:
        """``upstream.json``, read again only when it changed (the backend may rotate the key)."""
        path = self.state_dir / "upstream.json"
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._upstream is None or stamp != self._upstream_stamp:
            config = json.loads(path.read_text())
            url = self._override or config["url"]
            self._upstream = parse_upstream(url, str(config["api_key"]))
            self._upstream_stamp = stamp
        return self._upstream

    async def _git(self, request: _Request, sandbox_id: str, writer: asyncio.StreamWriter) -> bool:
        """``/git/<host>/<repo>/(info/refs|git-upload-pack|git-receive-pack)``: git's smart HTTP to the
        host, with the credential granted to this sandbox for it (``git/<sandbox id>.json``, written by
        the backend). Without a grant the request goes as git sent it, its own credentials included."""
        route = parse_git_route(request.method, request.target)
        if route is None:
            await self._reply(
                writer,
                403,
                "permission_error",
                f"the gateway relays git's smart HTTP only ({GIT_PREFIX}<host>/<repo>/info/refs, "
                f"git-upload-pack, git-receive-pack); not {request.method} {request.target.split('?', 1)[0]}",
            )
            return True
        host, rest = route
        grant = self._git_grant(sandbox_id, host)
        try:
            upstream = parse_upstream(grant.get("url") or f"https://{host}", "")
        except ValueError:
            await self._reply(writer, 503, "api_error", f"the git credential for {host} names no usable URL")
            return True
        if "token" in grant:
            pair = f"{grant.get('username') or 'x-access-token'}:{grant['token']}".encode()
            auth = [("authorization", "Basic " + base64.b64encode(pair).decode())]
            drop = CREDENTIAL_HEADERS
        else:
            auth, drop = [], frozenset({"x-api-key"})
        return await self._call(sandbox_id, request, upstream, rest, auth, drop, writer)

    def _git_grant(self, sandbox_id: str, host: str) -> dict[str, str]:
        try:
            grants = json.loads((self.state_dir / "git" / f"{sandbox_id}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        found = grants.get(host) if isinstance(grants, dict) else None
        return {k: str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    async def _forward(
        self,
        request: _Request,
        upstream: Upstream,
        target: str,
        auth: list[tuple[str, str]],
        drop: frozenset[str],
        client: asyncio.StreamWriter,
    ) -> tuple[int, int, bool]:
        """Send to the upstream and relay its answer; (status, body bytes relayed, client reusable)."""
        headers = _filtered(request.headers, drop | {"host", "content-length"})
        lines = [f"{request.method} {upstream.base_path}{target} HTTP/1.1", f"host: {upstream.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines += [f"{name}: {value}" for name, value in auth]
        if request.body or request.method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(request.body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body
        key = (upstream.scheme, upstream.host, upstream.port)
        try:
            async with asyncio.timeout(self._connect_timeout + self._read_timeout):
                reader, writer, head = await self._exchange(key, payload)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, _BadRequest) as e:
            reason = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            await self._reply(
                client,
                502,
                "api_error",
                f"the gateway could not reach the model API at {upstream.host} ({reason})",
            )
            return 502, 0, True
        progress = _Progress(self._read_timeout)
        try:
            async with asyncio.timeout(self._read_timeout) as progress.deadline:
                return await self._relay(request, key, reader, writer, head, client, progress)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _BadRequest) as e:
            # The answer is cut short (either side went away, or the upstream broke its framing): the
            # client sees a truncated message and its connection ends, the upstream one is not reused.
            writer.close()
            log.warning("gateway: relaying the answer from %s broke off: %s", upstream.host, type(e).__name__)
            return self._status_of(head), progress.sent, False
        except BaseException:
            writer.close()
            raise

    @staticmethod
    def _status_of(head: list[str]) -> int:
        code = head[0].split(" ")[1] if len(head[0].split(" ")) > 1 else ""
        return int(code) if code.isdigit() else 502

    async def _exchange(
        self, key: tuple[str, str, int], payload: bytes
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[str]]:
        """Send the request and read the final response head, on a pooled connection if one is idle.

        A pooled connection the upstream closed meanwhile fails before any answer; the request (held
        whole) is then sent once more on a fresh connection."""
        pooled = self._pool.take(key)
        if pooled is not None:
            reader, writer = pooled
            try:
                return reader, writer, await self._send(reader, writer, payload)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
        scheme, host, port = key
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=self._ssl if scheme == "https" else None,
                server_hostname=host if scheme == "https" else None,
                limit=MAX_HEAD_BYTES,
            ),
            self._connect_timeout,
        )
        try:
            return reader, writer, await self._send(reader, writer, payload)
        except BaseException:
            writer.close()
            raise

    @staticmethod
    async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> list[str]:
        writer.write(payload)
        await writer.drain()
        for _ in range(MAX_INTERIM_RESPONSES):
            head = await _read_head(reader)
            if head is None:
                raise asyncio.IncompleteReadError(b"", None)
            if not head[0].split(" ")[1:2] or not head[0].split(" ")[1].startswith("1"):
                return head
        raise _BadRequest(502, "the upstream sent too many interim responses")

    async def _relay(
        self,
        request: _Request,
        key: tuple[str, str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: list[str],
        client: asyncio.StreamWriter,
        progress: _Progress,
    ) -> tuple[int, int, bool]:
        version, _, rest = head[0].partition(" ")
        code_text, _, reason = rest.partition(" ")
        if not code_text.isdigit():
            raise _BadRequest(502, "the upstream's status line is malformed")
        status = int(code_text)
        upstream_headers = _parse_headers(head[1:])
        upstream_keeps = version == "HTTP/1.1" and "close" not in _connection_tokens(upstream_headers)
        no_body = request.method == "HEAD" or status in (204, 304)
        chunked = _is_chunked(upstream_headers)
        length = None if chunked else _content_length(upstream_headers)
        out = _filtered(upstream_headers, frozenset())
        if chunked or (length is None and not no_body):
            # Relayed chunk by chunk: a close-delimited answer is re-framed so the client can keep going.
            out = [(k, v) for k, v in out if k.lower() != "content-length"] + [
                ("transfer-encoding", "chunked")
            ]
        response = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, '')}"] + [f"{k}: {v}" for k, v in out]
        client.write(("\r\n".join(response) + "\r\n\r\n").encode("latin-1"))
        await client.drain()
        reusable = upstream_keeps
        if no_body:
            pass
        elif chunked:
            await _relay_chunked(reader, client, progress)
        elif length is not None:
            await _relay_exact(reader, client, length, progress)
        else:
            await _relay_until_close(reader, client, progress)
            reusable = False
        if reusable:
            self._pool.give(key, reader, writer)
        else:
            writer.close()
        return status, progress.sent, True

    # --- bookkeeping -------------------------------------------------------------------------------------

    def _touch(self, sandbox_id: str) -> None:
        path = self.state_dir / "activity" / sandbox_id
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.touch()
            os.utime(path)
        except OSError as e:
            log.warning("gateway: cannot record activity of %s: %s", sandbox_id, type(e).__name__)

    def _count(self, sandbox_id: str, bytes_in: int, bytes_out: int, status: int) -> None:
        """Add one request to the sandbox's counters.

        Writers serialize on a lock file (gateways may share the directory); the JSON is replaced
        atomically, so a reader without the lock sees the old counts or the new, never half a file."""
        folder = self.state_dir / "counters"
        path = folder / f"{sandbox_id}.json"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(folder / f".{sandbox_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    counters = json.loads(path.read_text())
                except FileNotFoundError:
                    counters = {}
                counters["requests"] = int(counters.get("requests", 0)) + 1
                counters["bytes_in"] = int(counters.get("bytes_in", 0)) + bytes_in
                counters["bytes_out"] = int(counters.get("bytes_out", 0)) + bytes_out
                by_status = counters.setdefault("status", {})
                label = str(status or "none")
                by_status[label] = int(by_status.get(label, 0)) + 1
                tmp = folder / f".{sandbox_id}.json.tmp"
                tmp.write_text(json.dumps(counters, sort_keys=True))
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
        except (OSError, ValueError) as e:
            log.warning("gateway: cannot count a request of %s: %s", sandbox_id, type(e).__name__)


def _connection_tokens(headers: list[tuple[str, str]]) -> set[str]:
    return {t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")}


class _Progress:
    """What a relay forwarded so far (a broken-off answer is still counted for what it carried), and the
    silence deadline it pushes back with every piece."""

    def __init__(self, timeout: float) -> None:
        self.sent = 0
        self.timeout = timeout
        self.deadline: asyncio.Timeout | None = None

    def moved(self, size: int) -> None:
        self.sent += size
        if self.deadline is not None:
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.timeout)


async def _relay_exact(
    reader: asyncio.StreamReader, client: asyncio.StreamWriter, length: int, progress: _Progress
) -> None:
    remaining = length
    while remaining:
        data = await reader.read(min(remaining, _READ))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        client.write(data)
        await client.drain()
        remaining -= len(data)
        progress.moved(len(data))


async def _relay_until_close(
    reader: asyncio.StreamReader, client: asyncio.StreamWriter, progress: _Progress
) -> None:
    while data := await reader.read(_READ):
        client.write(b"%x\r\n%s\r\n" % (len(data), data))
        await client.drain()
        progress.moved(len(data))
    client.write(b"0\r\n\r\n")
    await client.drain()


async def _relay_chunked(
    reader: asyncio.StreamReader, client: asyncio.StreamWriter, progress: _Progress
) -> None:
    """Copy a chunked body byte for byte (its framing included), each piece as it arrives."""
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest(502, "the upstream sent a malformed chunk") from None
        client.write(line)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                client.write(trailer)
                if trailer == b"\r\n":
                    await client.drain()
                    return
        remaining = size
        while remaining:
            data = await reader.read(min(remaining, _READ))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            client.write(data)
            await client.drain()
            remaining -= len(data)
            progress.moved(len(data))
        client.write(await reader.readexactly(2))
        await client.drain()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
