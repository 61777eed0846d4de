"""A loopback stand-in for the Messages API, and a gateway run in a thread, for the gateway's tests.

The upstream records what it received (headers included: the tests check which key arrived) and
answers ``POST /v1/messages`` with a server-sent event stream, chunked. With ``hold`` set, it sends the
first event and then waits for ``release`` before the rest: a test that sees the first event while the
stream is held open knows the gateway did not buffer it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox_lifecycle.adapters.egress.gateway import Gateway

REAL_KEY = "sk-ant-api03-REAL-upstream-key-0123456789"

EVENTS = [
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "role": "assistant"}}),
    ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
    ("message_stop", {"type": "message_stop"}),
]
# The most any test waits for a thread or an event: every wait is bounded.
WAIT_S = 10.0


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class Seen:
    method: str
    path: str
    # Lower-cased names; a name sent twice is kept in ``raw`` and makes ``fake_upstream`` fail the test.
    headers: dict[str, str]
    body: bytes
    raw: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.raw if k == name]


@dataclass
class FakeUpstream:
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    hold: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    status: int = 200
    connections: int = 0
    # How the event stream is framed: "chunked", "length" (Content-Length) or "close" (HTTP/1.0 style,
    # ended by closing the connection).
    framing: str = "chunked"
    # Close the connection after each answer without saying so, as a server dropping idle keep-alive
    # connections does: the gateway's pooled connection is then stale.
    drop_after_answer: bool = False
    # Header names some request carried more than once (the credential twice, say): a dict of the
    # headers would hide that, so every test using this upstream fails on it at the end.
    duplicated: list[str] = field(default_factory=list)
    # When set, every POST's answer waits (bounded) until it is set: bodies have arrived, heads have not.
    answer_gate: threading.Event | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


def _handler(up: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # As real servers do: small writes (an event) go out at once, not after the peer's delayed ACK.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            up.connections += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._record(b"")
            body = b'{"data": []}'
            self.send_response(self._status())
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                body = self._read_chunked()
            else:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
            self._record(body)
            if up.answer_gate is not None:
                up.answer_gate.wait(WAIT_S)
            if up.drop_after_answer:
                self.close_connection = True
            status = self._status()
            if status != 200:
                error = json.dumps({"type": "error", "error": {"type": "api_error", "message": "x"}}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            if up.framing == "chunked":
                self.send_header("transfer-encoding", "chunked")
            elif up.framing == "length":
                self.send_header("content-length", str(sum(len(sse(n, d)) for n, d in EVENTS)))
            else:
                self.close_connection = True
            self.send_header("connection", "keep-alive, x-upstream-hop")
            self.send_header("x-upstream-hop", "dropped")
            self.send_header("request-id", "req_fake")
            self.end_headers()
            for i, (name, data) in enumerate(EVENTS):
                self._send(sse(name, data))
                if i == 0 and up.hold:
                    up.release.wait(WAIT_S)
            if up.framing == "chunked":
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _send(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if up.framing == "chunked" else data)
            self.wfile.flush()

        def _read_chunked(self) -> bytes:
            parts = []
            for _ in range(100_000):
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)

        def _status(self) -> int:
            return up.status

        def _record(self, body: bytes) -> None:
            raw = [(k.lower(), v) for k, v in self.headers.items()]
            names = [k for k, _v in raw]
            up.duplicated += sorted({k for k in names if names.count(k) > 1})
            up.seen.append(Seen(self.command, self.path, dict(raw), body, raw))

    return Handler


@contextmanager
def fake_upstream(host: str = "127.0.0.1") -> Iterator[FakeUpstream]:
    server = ThreadingHTTPServer((host, 0), BaseHTTPRequestHandler)
    up = FakeUpstream(server)
    server.RequestHandlerClass = _handler(up)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield up
    finally:
        up.release.set()
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)
    assert not up.duplicated, f"the upstream received these headers more than once: {up.duplicated}"


def eventually(check: Callable[[], bool]) -> bool:
    """Whether ``check`` holds within WAIT_S: the gateway books a call just after its last byte went out."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class RunningGateway:
    gateway: Gateway
    url: str
    loop: asyncio.AbstractEventLoop


@contextmanager
def running_gateway(state_dir: Path, **kwargs: Any) -> Iterator[RunningGateway]:
    """A Gateway serving on 127.0.0.1 (any port) in an event loop of its own thread."""
    loop = asyncio.new_event_loop()
    gateway = Gateway(state_dir, **kwargs)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        box["server"] = await gateway.start("127.0.0.1", 0)
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(WAIT_S)
    assert ready.wait(WAIT_S)
    port = box["server"].sockets[0].getsockname()[1]
    try:
        yield RunningGateway(gateway, f"http://127.0.0.1:{port}", loop)
    finally:

        async def stop() -> None:
            await gateway.aclose(box["server"])

        asyncio.run_coroutine_threadsafe(stop(), loop).result(WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        loop.close()
