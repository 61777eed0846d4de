"""What the egress proxy answers itself when a request cannot go on, on loopback (127.0.0.0/8 stands in
for one sandbox network). Each test pins a behaviour a one-line mutant of proxy.py changed unnoticed
(docs/testing.md)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.policy import PolicyBook, policy_document, write_policy
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy, Limits


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The proxy's port, and a port the policy allows where nothing listens."""
    nobody = closed_port()
    write_policy(
        str(tmp_path),
        policy_document(
            "s1", "data-app", "127.0.0.0/8", [f"down.test:{nobody}"], [f"down.test:{nobody}:127.0.0.1"], "V"
        ),
    )
    egress = EgressProxy(PolicyBook(str(tmp_path)), log=lambda line: None, limits=Limits())
    server = egress.bind("127.0.0.1", 0)
    threading.Thread(target=egress.serve_forever, daemon=True).start()
    yield int(server.getsockname()[1]), nobody
    egress.close()


def ask(port: int, data: bytes, later: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if later:
            time.sleep(0.3)  # the proxy has read the first bytes alone by now
            sock.sendall(later)
        answer = b""
        for _ in range(1000):  # bounded: the proxy closes after one answer
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


@pytest.mark.parametrize("verb", ["GET", "CONNECT"])
def test_an_allowed_destination_that_refuses_the_connection_is_a_502(
    proxy: tuple[int, int], verb: str
) -> None:
    port, nobody = proxy
    target = f"http://down.test:{nobody}/" if verb == "GET" else f"down.test:{nobody}"
    answer = ask(port, f"{verb} {target} HTTP/1.1\r\nHost: down.test:{nobody}\r\n\r\n".encode())
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1] == b"502", answer
    assert f"cannot connect to down.test:{nobody} (127.0.0.1)".encode() in answer


def test_an_empty_head_sent_in_two_pieces_is_refused_at_once(proxy: tuple[int, int]) -> None:
    # The second read is searched together with the bytes before it, from the very first one.
    answer = ask(proxy[0], b"\r\n", later=b"\r\n")
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", answer
