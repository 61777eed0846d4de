"""The HTTP proxy of the egress point: CONNECT tunnels and absolute-form plain HTTP, per-sandbox policy.

A thread per connection with blocking sockets, and the bytes of an established connection moved by
``os.splice`` through a pipe (kernel to kernel, never copied into Python): a tunnel runs at nearly the
speed of a direct connection, and the few connections a sandbox opens at once need no event loop.

Plain HTTP is forwarded one request per connection (``Connection: close`` upstream): the proxy never
parses a response, so it cannot be confused about where one ends. Clients open a new connection for
the next request, as they do whenever a server closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from .policy import Decision, PolicyBook, Resolver, system_resolver

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
# When one direction of a connection has ended, how long the other may go on alone.
HALF_CLOSED_S = 60.0
MAX_CONNECTIONS = 512
_PIPE_CHUNK = 1 << 20
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"upgrade"}

Log = Callable[[str], None]


def _log(line: str) -> None:
    print(line, flush=True)


class EgressProxy:
    def __init__(
        self,
        book: PolicyBook,
        *,
        resolver: Resolver = system_resolver,
        log: Log = _log,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.book = book
        self.resolver = resolver
        self.log = log
        self._slots = threading.BoundedSemaphore(max_connections)
        self._server: socket.socket | None = None

    def bind(self, host: str, port: int) -> socket.socket:
        server = socket.create_server((host, port), reuse_port=False, backlog=256)
        self._server = server
        return server

    def serve_forever(self) -> None:
        assert self._server is not None, "bind first"
        while True:
            try:
                client, peer = self._server.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                _reply(client, 503, "the egress proxy has too many open connections; retry")
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client, peer[0]), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    # ------------------------------------------------------------------------------------ one client

    def _serve(self, client: socket.socket, source: str) -> None:
        try:
            self._handle(client, source)
        except OSError:
            pass  # the client or the upstream went away
        finally:
            client.close()
            self._slots.release()

    def _handle(self, client: socket.socket, source: str) -> None:
        client.settimeout(HEAD_TIMEOUT_S)
        head, rest = _read_head(client)
        if head is None:
            return
        request_line, _, header_block = head.partition(b"\r\n")
        parts = request_line.split()
        if len(parts) != 3:
            _reply(client, 400, "malformed request line")
            return
        method, target, version = parts
        policy = self.book.for_source(source)
        if policy is None:
            self.log(f"egress deny source={source} (not a sandbox network)")
            _reply(client, 403, f"egress refused: {source} is not a sandbox of this deployment")
            return
        if method == b"CONNECT":
            host, port = _authority(target.decode("latin-1"), 443)
            path = b""
        else:
            url = urlsplit(target.decode("latin-1"))
            if url.scheme != "http" or not url.hostname:
                _reply(
                    client,
                    400,
                    "this is an HTTP proxy: send absolute-form http:// requests or CONNECT "
                    "(https:// goes through CONNECT)",
                )
                return
            host, port = url.hostname, url.port or 80
            path = (url.path or "/").encode("latin-1") + (
                b"?" + url.query.encode("latin-1") if url.query else b""
            )
        if host is None:
            _reply(client, 400, f"cannot read a host and port from {target.decode('latin-1')!r}")
            return
        decision = policy.decide(host, port, self.resolver)
        verb = method.decode("latin-1")
        if decision.address is None:
            self.log(f"egress deny sandbox={policy.sandbox_id} {verb} {host}:{port}: {decision.reason}")
            _reply(client, decision.status, f"sandbox egress refused {host}:{port}: {decision.reason}")
            return
        upstream = _connect(decision, port)
        if upstream is None:
            _reply(client, 502, f"cannot connect to {host}:{port} ({decision.address})")
            return
        self.log(f"egress allow sandbox={policy.sandbox_id} {verb} {host}:{port} -> {decision.address}")
        with upstream:
            if method == b"CONNECT":
                client.sendall(version + b" 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(_origin_request(method, path, version, header_block, host, port))
            if rest:
                upstream.sendall(rest)
            client.settimeout(None)
            relay(client, upstream, one_request=method != b"CONNECT")


def _read_head(client: socket.socket) -> tuple[bytes | None, bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            _reply(client, 431, "request head too large")
            return None, b""
        chunk = client.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _authority(text: str, default_port: int) -> tuple[str | None, int]:
    host, port = text, default_port
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        if after.startswith(":") and after[1:].isdigit():
            port = int(after[1:])
    elif text.count(":") == 1:
        host, _, raw = text.partition(":")
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            return None, 0
        port = int(raw)
    return (host or None), port


def _origin_request(
    method: bytes, path: bytes, version: bytes, headers: bytes, host: str, port: int
) -> bytes:
    """The request as the origin expects it: origin-form target, our Host (the one that was checked, so a
    forged Host header cannot pick another virtual host), no proxy or hop-by-hop headers, one request."""
    lines = [method + b" " + path + b" " + version]
    for line in headers.split(b"\r\n"):
        name = line.partition(b":")[0].strip().lower()
        if line and name not in _HOP_BY_HOP and name != b"host":
            lines.append(line)
    authority = host if port == 80 else f"{host}:{port}"
    lines += [b"Host: " + authority.encode("idna"), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _connect(decision: Decision, port: int) -> socket.socket | None:
    assert decision.address is not None
    try:
        upstream = socket.create_connection((decision.address, port), timeout=CONNECT_TIMEOUT_S)
    except OSError:
        return None
    upstream.settimeout(None)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return upstream


def _reply(client: socket.socket, status: int, message: str) -> None:
    reasons = {
        400: "Bad Request",
        403: "Forbidden",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
    }
    body = (message + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Service Unavailable')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Sandbox-Egress: refused\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        client.sendall(head.encode("ascii") + body)


# ------------------------------------------------------------------------------------------ relaying


def relay(client: socket.socket, upstream: socket.socket, *, one_request: bool = False) -> None:
    """Move bytes both ways until the upstream has finished and then the client too (or, for one plain
    HTTP request, once the response is through); a client left talking alone is cut after HALF_CLOSED_S."""
    done = threading.Event()
    outbound = threading.Thread(target=_pump_then, args=(client, upstream, done), daemon=True)
    outbound.start()
    _pump(upstream, client)
    if one_request or not done.wait(HALF_CLOSED_S):
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    outbound.join(5)


def _pump_then(src: socket.socket, dst: socket.socket, done: threading.Event) -> None:
    try:
        _pump(src, dst)
    finally:
        done.set()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        if hasattr(os, "splice"):
            _splice(src, dst)
        else:
            while data := src.recv(_PIPE_CHUNK):
                dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _splice(src: socket.socket, dst: socket.socket) -> None:
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):  # a larger pipe moves more per call (64 KiB by default)
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_CHUNK)
        while True:
            moved = os.splice(src.fileno(), write_end, _PIPE_CHUNK, flags=os.SPLICE_F_MOVE)
            if moved == 0:
                return
            while moved:
                moved -= os.splice(read_end, dst.fileno(), moved, flags=os.SPLICE_F_MOVE)
    finally:
        os.close(read_end)
        os.close(write_end)


def wait_listening(host: str, port: int, timeout: float = 5.0) -> bool:
    """Whether something accepts connections on host:port within ``timeout`` (for starters and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False
