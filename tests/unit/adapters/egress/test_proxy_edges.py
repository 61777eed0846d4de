"""What the proxy writes itself and what it sends upstream, exactly (issue 20: gaps targeted mutation
testing found), on loopback: 127.0.0.0/8 stands in for one sandbox network, as in test_egress_proxy.py."""

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


class _EchoHost(http.server.BaseHTTPRequestHandler):
    """Answers a GET with the Host headers it received, a POST with its body."""

    def do_GET(self) -> None:
        body = f"{self.headers.get_all('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy_port(tmp_path: Path, upstream: int) -> Iterator[int]:
    write_policy(
        str(tmp_path),
        policy_document(
            "s1", "data-app", "127.0.0.0/8", [f"up.test:{upstream}"], [f"up.test:{upstream}:127.0.0.1"], "V"
        ),
    )
    proxy = EgressProxy(PolicyBook(str(tmp_path)), log=lambda line: None, limits=Limits())
    server = proxy.bind("127.0.0.1", 0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield int(server.getsockname()[1])
    proxy.close()


def _ask(port: int, data: bytes, later: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if later:
            time.sleep(0.3)  # the proxy has read the head and is connected upstream by now
            sock.sendall(later)
        answer = b""
        for _ in range(1000):  # bounded: the proxy closes after one answer
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_the_upstream_gets_exactly_one_host_the_checked_name_with_its_port(
    proxy_port: int, upstream: int
) -> None:
    # A forged Host must not reach the upstream; the port is part of the authority when not 80.
    request = f"GET http://up.test:{upstream}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n".encode()
    answer = _ask(proxy_port, request)
    assert answer.startswith(b"HTTP/1.0 200 ")
    assert answer.endswith(f"['up.test:{upstream}']".encode())


def test_the_proxy_s_own_refusals_carry_their_standard_reason_phrase(proxy_port: int, upstream: int) -> None:
    bad = _ask(proxy_port, b"GET http://up.test:99999/ HTTP/1.1\r\nHost: up.test\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    refused = _ask(proxy_port, b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"X-Sandbox-Egress: refused" in refused
    old = _ask(proxy_port, b"GET http://up.test/ HTTP/2.0\r\nHost: up.test\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")


def test_a_body_sent_after_the_head_is_streamed_to_the_upstream(proxy_port: int, upstream: int) -> None:
    # Not only the bytes that arrived with the head: the rest is pumped from the client to the upstream.
    head = f"POST http://up.test:{upstream}/ HTTP/1.1\r\nHost: up.test\r\nContent-Length: 10\r\n\r\n"
    answer = _ask(proxy_port, head.encode() + b"hello", later=b"world")
    assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"\r\n\r\nhelloworld")


def test_a_body_larger_than_the_socket_buffers_goes_through_whole_both_ways(
    proxy_port: int, upstream: int
) -> None:
    # 8 MiB fills the kernel's buffers on the way up and down, so each pump must wait for its
    # destination to become writable again (and not for something else) to finish.
    size = 8 * 1024 * 1024
    head = f"POST http://up.test:{upstream}/ HTTP/1.1\r\nHost: up.test\r\nContent-Length: {size}\r\n\r\n"
    body = bytes(range(256)) * (size // 256)
    answer = _ask(proxy_port, head.encode() + body)
    assert answer.startswith(b"HTTP/1.0 200 ")
    assert answer.partition(b"\r\n\r\n")[2] == body
