"""The proxy's shares and its survival, on loopback (127.0.0.0/8 stands in for one sandbox network).

The attacks themselves, from inside real sandboxes, are in tests/**/test_egress_attack.py; these are
the same rules, fast, with small limits so nothing here holds many descriptors or waits long.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.policy import PolicyBook, policy_document, write_policy
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy, Limits


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _start(tmp_path: Path, upstream: int, limits: Limits) -> tuple[EgressProxy, int, list[str]]:
    write_policy(
        str(tmp_path),
        policy_document(
            "s1", "data-app", "127.0.0.0/8", [f"up.test:{upstream}"], [f"up.test:{upstream}:127.0.0.1"], "V"
        ),
    )
    lines: list[str] = []
    proxy = EgressProxy(PolicyBook(str(tmp_path)), log=lines.append, limits=limits)
    server = proxy.bind("127.0.0.1", 0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy, int(server.getsockname()[1]), lines


def _ask(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _get(upstream: int) -> bytes:
    return f"GET http://up.test:{upstream}/ HTTP/1.1\r\nHost: up.test:{upstream}\r\n\r\n".encode()


def test_a_sandbox_beyond_its_share_is_told_so_and_the_proxy_keeps_serving(
    tmp_path: Path, upstream: int
) -> None:
    proxy, port, _ = _start(tmp_path, upstream, Limits(per_sandbox=8))
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
    try:
        for sock in held:
            sock.sendall(b"GET http://up.te")  # half a request line each
        time.sleep(0.2)
        assert proxy.open_connections() == {"s1": 8}
        refused = _ask(port, _get(upstream))
        assert refused.startswith(b"HTTP/1.1 503 ") and b"its share" in refused
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while proxy.open_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ask(port, _get(upstream)).startswith(b"HTTP/1.0 200 ")
    proxy.close()


def test_a_slow_head_is_cut_at_the_head_timeout_with_408(tmp_path: Path, upstream: int) -> None:
    proxy, port, _ = _start(tmp_path, upstream, Limits(head_timeout_s=0.5))
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(4):  # a byte at a time, never finishing
            sock.sendall(b"G")
            time.sleep(0.2)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - start < 2
    proxy.close()


def test_an_idle_tunnel_is_cut(tmp_path: Path, upstream: int) -> None:
    proxy, port, _ = _start(tmp_path, upstream, Limits(idle_timeout_s=0.5))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"CONNECT up.test:{upstream} HTTP/1.1\r\nHost: up.test:{upstream}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the proxy, nothing moved
        assert 0.4 < time.monotonic() - start < 3
    proxy.close()


def test_a_body_is_framed_by_its_length_and_nothing_after_it_is_forwarded(
    tmp_path: Path, upstream: int
) -> None:
    proxy, port, _ = _start(tmp_path, upstream, Limits())
    head = (
        f"POST http://up.test:{upstream}/ HTTP/1.1\r\nHost: up.test:{upstream}\r\nContent-Length: 5\r\n\r\n"
    )
    assert _ask(port, head.encode() + b"hello").endswith(b"\r\n\r\nhello")
    pipelined = _ask(port, head.encode() + b"helloGET / HTTP/1.1\r\n\r\n")
    assert pipelined.startswith(b"HTTP/1.1 400 ") and b"one request per connection" in pipelined
    chunked = (
        f"POST http://up.test:{upstream}/ HTTP/1.1\r\nHost: up.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert _ask(port, chunked.encode() + b"0\r\n\r\n").startswith(b"HTTP/1.1 411 ")
    proxy.close()


def test_a_nul_in_the_target_is_a_400_and_the_proxy_lives_on(tmp_path: Path, upstream: int) -> None:
    proxy, port, lines = _start(tmp_path, upstream, Limits())
    answer = _ask(port, f"GET http://up.test:{upstream}/\x00 HTTP/1.1\r\nHost: up.test\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    bad_port = _ask(port, b"GET http://up.test:99999/ HTTP/1.1\r\nHost: up.test\r\n\r\n")
    assert bad_port.startswith(b"HTTP/1.1 400 ")
    assert not any("Error" in line for line in lines), lines
    assert _ask(port, _get(upstream)).startswith(b"HTTP/1.0 200 ")
    proxy.close()


def test_a_failure_inside_one_connection_does_not_stop_the_accept_loop(
    tmp_path: Path, upstream: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, port, lines = _start(tmp_path, upstream, Limits())
    calls = {"n": 0}
    real = proxy.book.for_source

    def flaky(address: str):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("can't start new thread")  # what killed the old accept thread
        return real(address)

    monkeypatch.setattr(proxy.book, "for_source", flaky)
    # That one connection is dropped without an answer: a reset or a plain close, whichever the kernel
    # delivers first (a test that expected only the reset failed one run in three).
    try:
        dropped = _ask(port, _get(upstream), timeout=2)
    except OSError:
        dropped = b""
    assert dropped == b""
    assert _ask(port, _get(upstream)).startswith(b"HTTP/1.0 200 ")
    assert any("RuntimeError" in line for line in lines)
    proxy.close()
