"""The HTTP proxy of the egress point: CONNECT tunnels and absolute-form plain HTTP, per-sandbox policy.

One asyncio loop serves every connection (no thread per connection: the egress container's pids limit
once let 300 half-open connections of one sandbox kill the accept thread, and with it every sandbox's
way out). Each sandbox has a share: at most ``Limits.per_sandbox`` connections open, a whole request head
within ``head_timeout_s``, and a connection moving no byte for ``idle_timeout_s`` is cut; so one sandbox
holding slow heads, many connections or big bodies cannot starve another. The accept loop survives any
failure of one connection; a connection's failure ends that connection only.

Heads are parsed strictly (:mod:`.http1`). Plain HTTP is forwarded one request per connection: the
proxy frames the request body itself (Content-Length; chunked request bodies are refused with 411, use
CONNECT), refuses anything sent after it, and sends ``Connection: close`` upstream, so it never needs to
find where a response ends. Established bytes are moved by :mod:`.relay` (``splice`` where it can).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import inject
from .credentials import CredentialStore, Headers
from .http1 import HeadError, RequestHead, head_end, parse_head
from .inject import upgraded_port
from .policy import Decision, Policy, PolicyBook, Resolver, is_raw_ip, normalize_host, system_resolver
from .redact import AnswerRefused
from .relay import BufferPool, pump
from .resolver import FairLookups

CONNECT_TIMEOUT_S = 10.0
# How often the proxy looks for changed policies to cut open connections they no longer allow.
POLICY_WATCH_S = 0.25
# Refused connections linger this long (reading what they sent), at most this many at once.
_REFUSE_LINGER_S = 1.0
# Connections taken from the listen queue per wake-up of the accept loop, beyond the first.
_ACCEPT_BATCH = 64
_REFUSING_MAX = 256
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"te",
    b"trailer",
    b"upgrade",
    b"host",
}
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    411: "Length Required",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
# Bytes moved per sandbox go to the counting sink at most this often (and soon after a connection ends).
COUNT_FLUSH_S = 1.0
# The header of every answer the proxy writes itself: a client (and the health probe) can tell the
# proxy's own refusals from an upstream's.
REFUSED_HEADER = "X-Sandbox-Egress: refused"

Log = Callable[[str], None]
# Receives {sandbox id: (bytes into the sandbox, bytes out of it)} moved since its last call (bookkeeping).
CountSink = Callable[[dict[str, tuple[int, int]]], None]


def _log(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True, slots=True)
class Limits:
    """A sandbox's share of the proxy, and the proxy's bounds as a whole."""

    per_sandbox: int = 128
    total: int = 4096
    head_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    # When the upstream has finished, how long the client may go on sending alone (a CONNECT tunnel).
    half_closed_s: float = 60.0
    # Name lookups run on the proxy's own threads (:mod:`.resolver`): a sandbox may hold this many at
    # once, all sandboxes together this many (under the egress container's pids limit), and a connection
    # waits this long for its lookup, queueing included.
    resolving_per_sandbox: int = 4
    resolving_total: int = 64
    lookup_timeout_s: float = 5.0


class EgressProxy:
    def __init__(
        self,
        book: PolicyBook,
        *,
        resolver: Resolver = system_resolver,
        log: Log = _log,
        limits: Limits | None = None,
        counts: CountSink | None = None,
    ) -> None:
        self.book = book
        self.counts = counts
        self._moved: dict[str, list[int]] = {}  # sandbox id -> [into, out of], not yet given to counts
        self._count_soon = asyncio.Event()
        self.resolver = resolver
        self.log = log
        self.limits = limits or Limits()
        self.buffers = BufferPool()
        self._server: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._open: dict[str, int] = {}  # connections per share (sandbox id, or "?" + source)
        self.lookups = FairLookups(
            per_share=self.limits.resolving_per_sandbox,
            total=self.limits.resolving_total,
            timeout_s=self.limits.lookup_timeout_s,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = threading.Event()
        self._refusing = 0
        # Credentials to add to plain-HTTP requests (inject.py), and the trust for their TLS upstreams.
        state_dir = os.path.dirname(book.folder)
        self.credentials = CredentialStore(state_dir)
        self.trust = inject.TrustStore(state_dir)
        # Connections by their task, from the connect upstream on: (source, host, port), re-checked when
        # the policies change; forgotten when the task ends.
        self._tunnels: dict[asyncio.Task[None], tuple[str, str, int]] = {}

    def bind(self, host: str, port: int) -> socket.socket:
        server = socket.create_server((host, port), reuse_port=False, backlog=4096)
        server.setblocking(False)
        self._server = server
        return server

    def serve_forever(self) -> None:
        """Serve on this thread's own event loop until :meth:`close`."""
        asyncio.run(self.serve())

    def close(self) -> None:
        """Stop accepting and end every connection; safe from any thread."""
        self._closed.set()
        loop, task = self._loop, self._accepting
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(task.cancel)
        if self._server is not None:
            self._server.close()

    def open_connections(self) -> dict[str, int]:
        return dict(self._open)

    async def serve(self) -> None:
        assert self._server is not None, "bind first"
        self._loop = asyncio.get_running_loop()
        self._accepting = asyncio.current_task()
        self._count_soon = asyncio.Event()  # of this loop: a proxy served again gets a new one
        watch = asyncio.create_task(self._watch_policies())
        counting = asyncio.create_task(self._flush_counts())
        try:
            while not self._closed.is_set():
                await self._accept_one(self._server)
                # sock_accept returns at once while connections wait in the queue, so without this a
                # flood of connections from one sandbox would keep the loop accepting and starve every
                # open connection's pumps; one batch (at most 1 + _ACCEPT_BATCH) per turn of the loop
                # keeps them in step.
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not self._closed.is_set():
                raise
        finally:
            watch.cancel()
            counting.cancel()
            for task in list(self._tasks):
                task.cancel()
            try:
                await asyncio.gather(watch, counting, *self._tasks, return_exceptions=True)
            except asyncio.CancelledError:
                # close() ended the loop and its cancel landed while this waited: the end it asked for.
                if not self._closed.is_set():
                    raise

    async def _watch_policies(self) -> None:
        """Cut open connections to a destination their sandbox's policy no longer allows, within
        POLICY_WATCH_S of the change (a set_egress that closes a host closes its open tunnels too)."""
        seen = self.book.refresh()
        while True:
            await asyncio.sleep(POLICY_WATCH_S)
            try:
                generation = self.book.refresh()
                if generation != seen:
                    seen = generation
                    self._cut_disallowed()
            except Exception as exc:  # the watch outlives a bad moment of the folder
                self.log(f"egress: re-reading policies failed: {type(exc).__name__}: {exc}")

    async def _flush_counts(self) -> None:
        """Give the bytes moved per sandbox to ``counts``: every COUNT_FLUSH_S, and as soon as a
        connection ends (so a finished download is counted before its sandbox is measured)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._count_soon.wait(), COUNT_FLUSH_S)
            self._count_soon.clear()
            moved, self._moved = self._moved, {}
            if moved and self.counts is not None:
                batch = {sid: (into, out_of) for sid, (into, out_of) in moved.items()}
                try:  # file I/O: off the loop
                    await asyncio.get_running_loop().run_in_executor(None, self.counts, batch)
                except Exception as exc:
                    self.log(f"egress: counting bytes failed: {type(exc).__name__}: {exc}")

    def _tally(self, share: str, into: int, out_of: int) -> None:
        if share.startswith("?"):
            return  # not a sandbox: refused before any byte is relayed, counted nowhere
        moved = self._moved.get(share)
        if moved is None:
            moved = self._moved[share] = [0, 0]
        moved[0] += into
        moved[1] += out_of

    def _cut_disallowed(self) -> None:
        for task, (source, host, port) in list(self._tunnels.items()):
            if not self._allows(source, host, port):
                self.log(f"egress cut sandbox={self._who(source)} {host}:{port}: no longer in its allow-list")
                task.cancel()

    def _allows(self, source: str, host: str, port: int) -> bool:
        """Whether the policy in force now lets ``source`` reach ``host`` (normalized) on ``port``."""
        policy = self.book.for_source(source)
        return policy is not None and any(rule.matches(host, port) for rule in policy.rules)

    def _who(self, source: str) -> str:
        policy = self.book.for_source(source)
        return policy.sandbox_id if policy is not None else source

    async def _accept_one(self, server: socket.socket) -> None:
        assert self._loop is not None
        try:
            client, peer = await self._loop.sock_accept(server)
        except OSError as exc:
            if self._closed.is_set():
                return
            # Out of file descriptors or memory for a moment: say so, wait a little, keep accepting.
            self.log(f"egress accept failed ({exc}); retrying")
            await asyncio.sleep(0.1)
            return
        self._admit_safely(client, str(peer[0]))
        # Then whatever else is already queued, without waiting: under a connection flood the listen
        # queue must drain faster than it fills, or the kernel drops other sandboxes' SYNs (a 1 s
        # retransmit for their next request). Bounded, so the loop's other tasks still run between.
        for _ in range(_ACCEPT_BATCH):
            try:
                client, peer = server.accept()
            except OSError:  # nothing queued (BlockingIOError), or a moment out of descriptors
                return
            self._admit_safely(client, str(peer[0]))

    def _admit_safely(self, client: socket.socket, source: str) -> None:
        try:
            self._admit(client, source)
        except Exception as exc:  # one connection never ends the accept loop
            self.log(f"egress: dropped a connection from {source}: {type(exc).__name__}: {exc}")
            client.close()

    def _admit(self, client: socket.socket, source: str) -> None:
        client.setblocking(False)
        # Small answers (a refusal, a response head) go out at once, not after the previous one's ACK.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        policy = self.book.for_source(source)
        share = policy.sandbox_id if policy is not None else f"?{source}"
        held = self._open.get(share, 0)
        if held >= self.limits.per_sandbox or len(self._tasks) >= self.limits.total:
            message = (
                f"{held} connections of this sandbox are open through the egress proxy, its share; "
                "close some and retry"
                if held >= self.limits.per_sandbox
                else "the egress proxy is at its connection limit; retry"
            )
            if self._refusing >= _REFUSING_MAX:
                client.close()  # a flood of refusals: no more lingering ones
                return
            self._refusing += 1
            refusal = asyncio.create_task(_refuse(client, message))
            refusal.add_done_callback(lambda _: self._refused())
            return
        self._open[share] = held + 1
        task = asyncio.create_task(self._serve(client, source, share))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, client, share))

    def _refused(self) -> None:
        self._refusing -= 1

    def _finished(self, task: asyncio.Task[None], client: socket.socket, share: str) -> None:
        self._tasks.discard(task)
        self._tunnels.pop(task, None)
        if share in self._moved:
            self._count_soon.set()
        left = self._open.get(share, 1) - 1
        if left:
            self._open[share] = left
        else:
            self._open.pop(share, None)
        client.close()
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log(f"egress: a connection of {share} failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------------------------ one client

    async def _serve(self, client: socket.socket, source: str, share: str) -> None:
        # The client or the upstream went away, or was too slow: that connection ends, nothing else.
        with contextlib.suppress(OSError, TimeoutError):
            await self._handle(client, source, share)

    async def _handle(self, client: socket.socket, source: str, share: str) -> None:
        try:
            async with asyncio.timeout(self.limits.head_timeout_s):
                got = await _read_head(client)
            if got is None:
                return
            head, rest = parse_head(got[0]), got[1]
        except TimeoutError:
            await _reply(client, 408, f"no complete request head within {self.limits.head_timeout_s:g}s")
            return
        except HeadError as refused:
            await _reply(client, refused.status, refused.reason)
            return
        # The policy in force now that the head is complete, not at accept time: a connection opened
        # before a revoke and asking after it is decided by the revoke (the head may take head_timeout_s).
        policy = self.book.for_source(source)
        if policy is None:
            self.log(f"egress deny source={source} (not a sandbox network)")
            await _reply(client, 403, f"egress refused: {source} is not a sandbox of this deployment")
            return
        try:
            host, port, path = _destination(head)
            body = _body(head, rest)
        except HeadError as refused:
            await _reply(client, refused.status, refused.reason)
            return
        verb = head.method.decode("ascii")
        # A plain-HTTP request to a host the sandbox holds credentials for goes on over TLS (inject.py),
        # decided by the same policy for the port it really goes to.
        credentials = (
            []
            if head.method == b"CONNECT"
            else self._credentials_for(policy, host, port, path.decode("latin-1").split("?", 1)[0])
        )
        if credentials:
            port = upgraded_port(port)
        decision = await self._decide(policy, host, port)
        if decision.address is None:
            self.log(f"egress deny sandbox={policy.sandbox_id} {verb} {host}:{port}: {decision.reason}")
            await _reply(client, decision.status, f"sandbox egress refused {host}:{port}: {decision.reason}")
            return
        task = asyncio.current_task()
        assert task is not None
        # Registered for the policy watch before the connect, then checked against the policy in force
        # once more: a revoke landing during the lookup (before the registration) is refused here, one
        # landing during the connect or later is cut by the watch.
        self._tunnels[task] = (source, normalize_host(host), port)
        if not self._allows(source, normalize_host(host), port):
            self.log(f"egress deny sandbox={policy.sandbox_id} {verb} {host}:{port}: revoked while deciding")
            await _reply(client, 403, f"sandbox egress refused {host}:{port}: no longer in its allow-list")
            return
        upstream = await _connect(decision.address, port)
        if upstream is None:
            await _reply(client, 502, f"cannot connect to {host}:{port} ({decision.address})")
            return
        names = ",".join(name for name, _ in credentials)  # the names only: never a value in a log line
        added = f" credentials={names}" if credentials else ""
        self.log(
            f"egress allow sandbox={policy.sandbox_id} {verb} {host}:{port} -> {decision.address}{added}"
        )
        loop = asyncio.get_running_loop()
        with upstream:
            if head.method == b"CONNECT":
                await loop.sock_sendall(client, head.version + b" 200 Connection established\r\n\r\n")
                if rest:
                    await loop.sock_sendall(upstream, rest)
                    self._tally(share, 0, len(rest))
                await self._relay(client, upstream, share, body_left=None)
            elif credentials:
                await self._with_credentials(
                    client, upstream, head, path, host, port, rest, body, credentials
                )
            else:
                request = _origin_request(head, path, host, port) + rest
                await loop.sock_sendall(upstream, request)
                self._tally(share, 0, len(request))  # the sandbox's request, as it went out
                await self._relay(client, upstream, share, body_left=body - len(rest))

    def _credentials_for(self, policy: Policy, host: str, port: int, path: str) -> Headers:
        try:
            return self.credentials.for_request(
                policy.sandbox_id, normalize_host(host), upgraded_port(port), path
            )
        except OSError as exc:  # unreadable: the request goes on without them, and says so
            self.log(f"egress: credentials of {policy.sandbox_id} unreadable: {type(exc).__name__}")
            return []

    async def _with_credentials(
        self,
        client: socket.socket,
        upstream: socket.socket,
        head: RequestHead,
        path: bytes,
        host: str,
        port: int,
        rest: bytes,
        body: int,
        credentials: Headers,
    ) -> None:
        host = normalize_host(host)
        sent = inject.request_head(
            head.method, path, head.version, _end_to_end(head), host, port, credentials
        )
        try:
            await inject.exchange(
                client,
                upstream,
                self.trust.context(),
                host,
                sent,
                rest,
                body - len(rest),
                credentials,
                self.limits.idle_timeout_s,
            )
        except inject.UpstreamTLSFailed as exc:
            self.log(f"egress: TLS to {host}:{port} failed: {exc}")
            await _reply(client, 502, f"TLS to {host}:{port} failed ({exc}); no request was sent")
        except AnswerRefused as exc:
            self.log(f"egress: the answer of {host}:{port} to a credentialed request was refused: {exc}")
            await _reply(client, 502, f"{exc}; a credentialed answer is relayed only in clear and whole")

    async def _decide(self, policy: Policy, host: str, port: int) -> Decision:
        if (normalize_host(host), port) in policy.pins or is_raw_ip(normalize_host(host)):
            return policy.decide(host, port, self.resolver)  # no lookup: no thread hop
        try:  # a lookup may block: it runs on a thread of the sandbox's share (resolver.py)
            return await self.lookups.run(policy.sandbox_id, lambda: policy.decide(host, port, self.resolver))
        except TimeoutError:
            timeout = self.limits.lookup_timeout_s
            return Decision(None, 504, f"looking up {host} took longer than {timeout:g}s; retry")
        except RuntimeError as exc:  # no thread to be had (the container's pids limit)
            return Decision(None, 503, f"cannot look up {host} now ({exc}); retry")

    async def _relay(
        self, client: socket.socket, upstream: socket.socket, share: str, body_left: int | None
    ) -> None:
        """Tunnel (``body_left`` None): both ways until the upstream and then the client have finished.
        Plain HTTP: ``body_left`` more bytes of the body up, and the response down until it ends."""
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        def sent(n: int) -> None:
            last[0] = loop.time()
            self._tally(share, 0, n)

        def received(n: int) -> None:
            last[0] = loop.time()
            self._tally(share, n, 0)

        up = asyncio.create_task(pump(client, upstream, self.buffers, share, limit=body_left, moved=sent))
        down = asyncio.create_task(pump(upstream, client, self.buffers, share, moved=received))
        pending: set[asyncio.Task[int]] = {up, down}
        alone_since: float | None = None
        try:
            while pending:
                deadline = last[0] + self.limits.idle_timeout_s
                if alone_since is not None:
                    deadline = min(deadline, alone_since + self.limits.half_closed_s)
                done, pending = await asyncio.wait(
                    pending, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()  # an OSError of either side ends the connection
                if down in done:
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_WR)
                    if body_left is not None:
                        return  # the response is through; nothing else is read from this client
                    alone_since = loop.time()
                if up in done and body_left is None:
                    with contextlib.suppress(OSError):
                        upstream.shutdown(socket.SHUT_WR)
                if not done and loop.time() >= deadline:
                    return  # idle, or a client talking alone for too long
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)


async def _read_head(client: socket.socket) -> tuple[bytes, bytes] | None:
    """The head (through its CRLF CRLF) and whatever followed it in the same reads; None if the client
    left first. The size limit holds over every read together."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    searched = 0
    while True:
        end = head_end(buffer, searched)
        if end >= 0:
            return bytes(buffer[:end]), bytes(buffer[end:])
        # Next time search only the new bytes (and the three before them): a head trickled in a byte
        # at a time must not cost a scan of the whole buffer per byte.
        searched = max(0, len(buffer) - 3)
        chunk = await loop.sock_recv(client, 65536)
        if not chunk:
            return None
        buffer += chunk


def _destination(head: RequestHead) -> tuple[str, int, bytes]:
    target = head.target.decode("ascii")
    if head.method == b"CONNECT":
        host, port = _authority(target)
        return host, port, b""
    try:
        url = urlsplit(target)
        port = url.port or 80
    except ValueError as exc:
        raise HeadError(400, f"cannot read a host and port from {target!r}") from exc
    if url.scheme != "http" or not url.hostname or url.username is not None or url.fragment:
        raise HeadError(
            400,
            "this is an HTTP proxy: send absolute-form http:// requests or CONNECT "
            "(https:// goes through CONNECT)",
        )
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return url.hostname, port, path.encode("ascii")


def _authority(text: str) -> tuple[str, int]:
    """CONNECT's authority-form: host:port or [v6]:port, the port required (RFC 9112 §3.2.3)."""
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        raw = after[1:] if after.startswith(":") else ""
    else:
        host, _, raw = text.rpartition(":")
        if ":" in host:
            host = ""
    if not host or not raw.isdigit() or not 0 < int(raw) < 65536 or len(raw) > 5:
        raise HeadError(400, f"CONNECT needs host:port, not {text!r}")
    return host, int(raw)


def _body(head: RequestHead, rest: bytes) -> int:
    """The request body's length, which the proxy frames itself; nothing may follow the body."""
    if head.method == b"CONNECT":
        return 0
    if head.content_length is None:
        raise HeadError(
            411,
            "chunked request bodies are not forwarded over plain HTTP; send a "
            "Content-Length, or use https:// (CONNECT)",
        )
    if len(rest) > head.content_length:
        raise HeadError(400, "bytes after the request: this proxy takes one request per connection")
    return head.content_length


def _end_to_end(head: RequestHead) -> list[tuple[bytes, bytes]]:
    """The request's headers without proxy and hop-by-hop ones (and those its Connection names)."""
    named = {token.strip().lower() for token in (head.get(b"connection") or b"").split(b",") if token.strip()}
    return [(name, value) for name, value in head.headers if name not in _HOP_BY_HOP | named]


def _origin_request(head: RequestHead, path: bytes, host: str, port: int) -> bytes:
    """The request as the origin expects it: origin-form target, our Host (the one that was checked, so a
    forged Host header cannot pick another virtual host), no proxy or hop-by-hop headers, one request."""
    lines = [head.method + b" " + path + b" " + head.version]
    lines += [name + b": " + value for name, value in _end_to_end(head)]
    authority = host if port == 80 else f"{host}:{port}"
    lines += [b"Host: " + authority.encode("idna"), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _connect(address: str, port: int) -> socket.socket | None:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    upstream = socket.socket(family, socket.SOCK_STREAM)
    upstream.setblocking(False)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.get_running_loop().sock_connect(upstream, (address, port))
    except (OSError, TimeoutError):
        upstream.close()
        return None
    except asyncio.CancelledError:  # the policy watch cut it while connecting
        upstream.close()
        raise
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return upstream


def _answer(status: int, message: str) -> bytes:
    body = (message + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Service Unavailable')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{REFUSED_HEADER}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _reply(client: socket.socket, status: int, message: str) -> None:
    with contextlib.suppress(OSError):
        async with asyncio.timeout(5):
            await asyncio.get_running_loop().sock_sendall(client, _answer(status, message))


async def _refuse(client: socket.socket, message: str) -> None:
    """A 503 to a connection over its share. The request it sent is read and dropped for a moment
    first: closing a socket with unread bytes resets it, and the client would never see why."""
    with client, contextlib.suppress(OSError, TimeoutError):
        client.send(_answer(503, message))  # a short answer fits in the socket's send buffer
        client.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(_REFUSE_LINGER_S):
            while await asyncio.get_running_loop().sock_recv(client, 65536):
                pass


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
