"""The proxy counts the bytes it moves per sandbox (into it, out of it) and gives them to its sink
soon after a connection ends, on loopback (127.0.0.0/8 stands in for one sandbox network)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress import bookkeeping
from sandbox_lifecycle.adapters.egress.policy import PolicyBook, policy_document, write_policy
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy
from tests.unit.adapters.egress.test_proxy import _ask, upstream  # noqa: F401

BODY = b"x" * 70_000


def _start(tmp_path: Path, port: int, sink: object) -> tuple[EgressProxy, int]:
    write_policy(
        str(tmp_path),
        policy_document(
            "s1", "data-app", "127.0.0.0/8", [f"up.test:{port}"], [f"up.test:{port}:127.0.0.1"], "V"
        ),
    )
    proxy = EgressProxy(PolicyBook(str(tmp_path)), log=lambda _: None, counts=sink)  # type: ignore[arg-type]
    server = proxy.bind("127.0.0.1", 0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy, int(server.getsockname()[1])


@pytest.fixture
def counted(tmp_path: Path, upstream: int) -> Iterator[tuple[int, list[dict[str, tuple[int, int]]]]]:  # noqa: F811
    batches: list[dict[str, tuple[int, int]]] = []
    proxy, port = _start(tmp_path, upstream, batches.append)
    yield port, batches
    proxy.close()


def _totals(batches: list[dict[str, tuple[int, int]]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for batch in list(batches):
        for sid, (into, out_of) in batch.items():
            seen = out.setdefault(sid, [0, 0])
            seen[0] += into
            seen[1] += out_of
    return out


def _settled(batches: list[dict[str, tuple[int, int]]], want_in: int) -> dict[str, list[int]]:
    deadline = time.monotonic() + 5  # bounded: the sink is called within a flush of the connection's end
    while time.monotonic() < deadline:
        totals = _totals(batches)
        if totals.get("s1", [0, 0])[0] >= want_in:
            return totals
        time.sleep(0.02)
    return _totals(batches)


def test_plain_http_counts_the_request_out_and_the_answer_in(
    counted: tuple[int, list[dict[str, tuple[int, int]]]],
    upstream: int,  # noqa: F811
) -> None:
    port, batches = counted
    head = (
        f"POST http://up.test:{upstream}/ HTTP/1.1\r\nHost: up.test:{upstream}\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    started = time.monotonic()
    answer = _ask(port, head.encode() + BODY)
    assert answer.endswith(BODY)
    totals = _settled(batches, len(answer))
    took = time.monotonic() - started
    assert totals["s1"][0] == len(answer)  # every byte of the answer, head included
    assert totals["s1"][1] > len(BODY)  # the body and the head the proxy sent upstream
    assert took < 1.0, f"counted {took:.2f}s after the connection ended: the end should flush at once"


def test_a_tunnel_counts_both_ways(
    counted: tuple[int, list[dict[str, tuple[int, int]]]],
    upstream: int,  # noqa: F811
) -> None:
    port, batches = counted
    request = f"GET / HTTP/1.1\r\nHost: up.test:{upstream}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"CONNECT up.test:{upstream} HTTP/1.1\r\nHost: up.test:{upstream}\r\n\r\n".encode() + request
        )
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    established = got.index(b"\r\n\r\n") + 4
    totals = _settled(batches, len(got) - established)
    assert totals["s1"] == [len(got) - established, len(request)]


def test_the_sink_gets_the_bytes_into_the_state_directory(tmp_path: Path, upstream: int) -> None:  # noqa: F811
    proxy, port = _start(tmp_path, upstream, lambda moved: bookkeeping.count_transfer(tmp_path, moved))
    try:
        answer = _ask(
            port, f"GET http://up.test:{upstream}/ HTTP/1.1\r\nHost: up.test:{upstream}\r\n\r\n".encode()
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (tmp_path / "transfer" / "s1.json").exists():
            time.sleep(0.02)
        assert bookkeeping.read_counts(tmp_path, "s1")["transfer"]["bytes_in"] == len(answer)
    finally:
        proxy.close()
