"""A revoke against connections the proxy is still deciding, on loopback (127.0.0.0/8 stands in for one
sandbox network): the head arriving after it, the lookup and the connect upstream it lands in. The same
findings from inside real sandboxes are in tests/integration/attacks/test_redteam_egress.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress import policy as policy_module
from sandbox_lifecycle.adapters.egress import proxy as proxy_module
from sandbox_lifecycle.adapters.egress.policy import PolicyBook, policy_document, write_policy
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy, Limits

WAIT_S = 5.0


@pytest.fixture
def upstream() -> Iterator[int]:
    """Answers "hello" to whatever it reads, on each connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT_S)

    def serve() -> None:
        for _ in range(4):  # at most the connections a test makes
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def _answer(conn: socket.socket) -> None:
    conn.settimeout(WAIT_S)
    with conn, contextlib.suppress(OSError):
        while conn.recv(4096):
            conn.sendall(b"hello")


class Sandbox:
    def __init__(self, state: Path, upstream: int) -> None:
        self.state, self.target = state, f"up.test:{upstream}"
        self.pin = f"up.test:{upstream}:127.0.0.1"

    def allow(self, hosts: Sequence[str]) -> None:
        document = policy_document("s1", "data-app", "127.0.0.0/8", list(hosts), [self.pin], "V")
        write_policy(str(self.state), document)

    def revoke(self) -> None:
        self.allow([])


def _serve(tmp_path: Path, **kwargs: object) -> tuple[EgressProxy, int, list[str]]:
    lines: list[str] = []
    proxy = EgressProxy(PolicyBook(str(tmp_path)), log=lines.append, limits=Limits(), **kwargs)  # type: ignore[arg-type]
    server = proxy.bind("127.0.0.1", 0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy, int(server.getsockname()[1]), lines


def _tunnel(sock: socket.socket, target: str) -> bytes:
    """Asks for a tunnel on an open connection; its status line, then "hello" if the tunnel carries."""
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and (chunk := sock.recv(4096)):
        head += chunk
    line = head.split(b"\r\n")[0]
    if b" 200 " not in line:
        return line
    try:
        sock.sendall(b"ping")
        return line + b" " + sock.recv(4096)
    except OSError:
        return line + b" cut"


def test_a_connection_opened_before_a_revoke_is_decided_by_it(tmp_path: Path, upstream: int) -> None:
    sandbox = Sandbox(tmp_path, upstream)
    sandbox.allow([sandbox.target])
    proxy, port, lines = _serve(tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as early:
            time.sleep(0.1)  # accepted under the open list
            sandbox.revoke()
            answer = _tunnel(early, sandbox.target)
        assert b" 403 " in answer, answer
        assert any("not in the allow-list" in line for line in [answer.decode(), *lines]), lines
        sandbox.allow([sandbox.target])  # and opened again: a new connection gets through
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as late:
            assert _tunnel(late, sandbox.target).endswith(b" 200 Connection established hello")
    finally:
        proxy.close()


def test_a_revoke_landing_during_the_lookup_refuses_the_tunnel(
    tmp_path: Path, upstream: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name is looked up (not pinned), and its loopback answer taken as a public one, here only.
    monkeypatch.setattr(policy_module, "refused_address", lambda address: None)
    sandbox = Sandbox(tmp_path, upstream)
    sandbox.pin = f"other.test:{upstream}:127.0.0.1"
    asked, answer_now = threading.Event(), threading.Event()

    def resolver(host: str, port: int) -> list[str]:
        asked.set()
        assert answer_now.wait(WAIT_S)
        return ["127.0.0.1"]

    sandbox.allow([sandbox.target])
    proxy, port, lines = _serve(tmp_path, resolver=resolver)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
            sock.sendall(f"CONNECT {sandbox.target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert asked.wait(WAIT_S)
            sandbox.revoke()
            time.sleep(0.6)  # the policy watch has seen it (and had nothing registered to cut)
            answer_now.set()
            answer = sock.recv(4096)
        assert b" 403 " in answer and b"no longer in its allow-list" in answer, answer
        assert any("revoked while deciding" in line for line in lines), lines
    finally:
        proxy.close()


def test_a_revoke_landing_during_the_connect_cuts_the_tunnel(
    tmp_path: Path, upstream: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = proxy_module._connect

    async def slow_connect(address: str, port: int) -> socket.socket | None:
        await asyncio.sleep(1.0)  # a SYN retransmit's worth; the watch runs every 0.25 s meanwhile
        return await real_connect(address, port)

    monkeypatch.setattr(proxy_module, "_connect", slow_connect)
    sandbox = Sandbox(tmp_path, upstream)
    sandbox.allow([sandbox.target])
    proxy, port, lines = _serve(tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
            sock.sendall(f"CONNECT {sandbox.target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.3)  # decided, connecting
            sandbox.revoke()
            answer = sock.recv(4096)
        assert answer == b"", answer  # closed without a tunnel
        assert any(line.startswith("egress cut sandbox=s1 up.test:") for line in lines), lines
        assert proxy.open_connections() == {}
    finally:
        proxy.close()
