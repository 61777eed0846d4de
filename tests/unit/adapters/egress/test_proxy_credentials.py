"""Credentials added by the proxy, on loopback (127.0.0.0/8 stands in for one sandbox network): a plain
HTTP request to a credentialed host goes on over TLS (a throw-away CA the egress point is told to trust)
with the headers added, to that host only; the sandbox never reads a value back."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.credentials import write_credentials
from sandbox_lifecycle.adapters.egress.inject import CA_FILE
from sandbox_lifecycle.adapters.egress.policy import PolicyBook, policy_document, write_policy
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy
from tests.support.recording_origin import Origin, recording_origin
from tests.support.tls_ca import ThrowawayCA, make_ca

SECRET = "PLANTED-cred-" + "7f3a9c2e4b1d8f6a"
HOST = "api.cred.test"
OTHER = "other.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_ca(tmp_path_factory.mktemp("ca"), [HOST, OTHER])


@pytest.fixture
def origins(ca: ThrowawayCA) -> Iterator[tuple[Origin, Origin]]:
    with recording_origin("127.0.0.1", ca) as tls, recording_origin("127.0.0.1", ca) as other:
        yield tls, other


@pytest.fixture
def proxy(tmp_path: Path, ca: ThrowawayCA, origins: tuple[Origin, Origin]) -> Iterator[tuple[int, list[str]]]:
    tls, other = origins
    allow = [f"{HOST}:{tls.port}", f"{OTHER}:{other.port}"]
    pins = [f"{HOST}:{tls.port}:127.0.0.1", f"{OTHER}:{other.port}:127.0.0.1"]
    write_policy(str(tmp_path), policy_document("s1", "data-app", "127.0.0.0/8", allow, pins, "V"))
    (tmp_path / CA_FILE).write_bytes(ca.ca.read_bytes())
    write_credentials(
        tmp_path, "s1", f"{HOST}:{tls.port}", {"Authorization": f"Bearer {SECRET}", "X-Team": "t1"}
    )
    lines: list[str] = []
    egress = EgressProxy(PolicyBook(str(tmp_path)), log=lines.append)
    server = egress.bind("127.0.0.1", 0)
    threading.Thread(target=egress.serve_forever, daemon=True).start()
    yield int(server.getsockname()[1]), lines
    egress.close()


def _ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _get(host: str, port: int, path: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()


def test_the_request_arrives_over_tls_with_the_credential_and_the_sandbox_sees_stars(
    proxy: tuple[int, list[str]], origins: tuple[Origin, Origin]
) -> None:
    port, lines = proxy
    tls, _ = origins
    answer = _ask(port, _get(HOST, tls.port, "/echo", "Authorization: Bearer mine", "authorization: x"))
    assert answer.startswith(b"HTTP/1.1 200")
    # The sandbox's own headers of that name are gone; ours went, once.
    assert tls.headers("authorization") == [f"Bearer {SECRET}"]
    assert tls.headers("x-team") == ["t1"]
    assert tls.headers("host") == [f"{HOST}:{tls.port}"]
    # The origin echoed it: the sandbox reads stars of the same length, never the value.
    assert SECRET.encode() not in answer
    assert b"Authorization: " + b"*" * len(f"Bearer {SECRET}") in answer
    assert any("credentials=Authorization,X-Team" in line for line in lines)
    assert not any(SECRET in line for line in lines)


def test_a_post_body_goes_along(proxy: tuple[int, list[str]], origins: tuple[Origin, Origin]) -> None:
    port, _ = proxy
    tls, _ = origins
    request = (
        f"POST http://{HOST}:{tls.port}/post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    ).encode()
    answer = _ask(port, request)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok hello")
    assert tls.headers("authorization") == [f"Bearer {SECRET}"]


def test_another_allowed_host_never_gets_it_nor_does_a_redirect_carry_it(
    proxy: tuple[int, list[str]], origins: tuple[Origin, Origin], ca: ThrowawayCA
) -> None:
    port, _ = proxy
    tls, other = origins
    tls.location = f"https://{OTHER}:{other.port}/landed"
    answer = _ask(port, _get(HOST, tls.port, "/redirect"))
    # The proxy does not follow: the sandbox gets the 302, and its next request is its own.
    assert answer.startswith(b"HTTP/1.1 302") and f"{OTHER}:{other.port}/landed".encode() in answer
    assert other.seen == []
    # Another allow-listed host, asked through a tunnel (the only way to its TLS): nothing added.
    context = ssl.create_default_context(cafile=str(ca.ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"CONNECT {OTHER}:{other.port} HTTP/1.1\r\nHost: {OTHER}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        with context.wrap_socket(raw, server_hostname=OTHER) as tunnel:
            tunnel.sendall(f"GET /echo HTTP/1.1\r\nHost: {OTHER}\r\n\r\n".encode())
            echoed = tunnel.recv(65536)
    assert b"200" in echoed and SECRET.encode() not in echoed
    assert other.headers("authorization") == []


def test_a_connect_tunnel_to_the_credentialed_host_gets_nothing_added(
    proxy: tuple[int, list[str]], origins: tuple[Origin, Origin], ca: ThrowawayCA
) -> None:
    port, _ = proxy
    tls, _ = origins
    context = ssl.create_default_context(cafile=str(ca.ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"CONNECT {HOST}:{tls.port} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        with context.wrap_socket(raw, server_hostname=HOST) as tunnel:
            tunnel.sendall(f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            tunnel.recv(65536)
    assert tls.headers("authorization") == []


def test_an_untrusted_origin_gets_nothing_and_the_sandbox_a_502(
    proxy: tuple[int, list[str]], origins: tuple[Origin, Origin], tmp_path: Path
) -> None:
    port, lines = proxy
    tls, _ = origins
    (tmp_path / CA_FILE).unlink()  # the egress point no longer trusts the test CA
    answer = _ask(port, _get(HOST, tls.port, "/echo"))
    assert answer.startswith(b"HTTP/1.1 502") and b"no request was sent" in answer
    assert tls.seen == []
    assert SECRET.encode() not in answer and not any(SECRET in line for line in lines)


def test_removed_credentials_are_no_longer_added(
    proxy: tuple[int, list[str]], origins: tuple[Origin, Origin], tmp_path: Path
) -> None:
    port, _ = proxy
    tls, _ = origins
    write_credentials(tmp_path, "s1", f"{HOST}:{tls.port}", {})
    # Without credentials a plain-HTTP request goes as plain HTTP: the TLS origin cannot answer it.
    _ask(port, _get(HOST, tls.port, "/echo"))
    assert tls.headers("authorization") == []


def test_a_body_sent_after_the_head_goes_along(
    proxy: tuple[int, list[str]], origins: tuple[Origin, Origin]
) -> None:
    port, _ = proxy
    tls, _ = origins
    head = f"POST http://{HOST}:{tls.port}/post HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(0.3)  # the head alone first: the body is read from the client afterwards
        sock.sendall(b"hello")
        time.sleep(0.1)
        sock.sendall(b"world")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok helloworld")
