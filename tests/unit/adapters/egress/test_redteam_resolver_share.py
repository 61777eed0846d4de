"""Red team: name lookups of some sandboxes starving another's, on loopback with a stand-in resolver.

Each sandbox may hold ``Limits.resolving_per_sandbox`` lookups at once, but they all run in the event
loop's default thread pool, whose size (min(32, cores + 4)) the sandboxes share. Sandboxes whose
allow-list has a wildcard can ask for names of their choosing under it, and a name whose lookup
hangs holds a pool thread for the resolver's whole timeout. The stand-in resolver here is slow for
``slow*`` names and answers loopback (which the proxy refuses) for the rest: nothing leaves this host.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.policy import PolicyBook, policy_document, write_policy
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy, Limits

SLOW_S = 2.0
# Enough sandboxes to hold the largest default pool (32 threads) with 4 lookups each.
ATTACKERS = 8


def _resolver(host: str, port: int) -> Sequence[str]:
    if host.startswith("slow"):
        time.sleep(SLOW_S)  # a lookup that hangs until the resolver's timeout
        raise OSError("timed out")
    return ["127.0.0.1"]


@pytest.fixture
def proxy_port(tmp_path: Path) -> Iterator[int]:
    for n in range(ATTACKERS):
        document = policy_document(f"a{n}", "data-app", f"127.0.{10 + n}.0/24", ["*.a.test"], [], "V")
        write_policy(str(tmp_path), document)
    write_policy(
        str(tmp_path), policy_document("bystander", "data-app", "127.0.99.0/24", ["b.test"], [], "V")
    )
    proxy = EgressProxy(PolicyBook(str(tmp_path)), resolver=_resolver, log=lambda _: None, limits=Limits())
    server = proxy.bind("127.0.0.1", 0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield int(server.getsockname()[1])
    proxy.close()


def _ask(port: int, source: str, host: str) -> bytes:
    with socket.socket() as sock:
        sock.settimeout(30)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"CONNECT {host}:80 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


@pytest.mark.slow
def test_slow_lookups_of_other_sandboxes_do_not_delay_a_bystanders_decision(proxy_port: int) -> None:
    alone_started = time.monotonic()
    assert b" 403 " in _ask(proxy_port, "127.0.99.1", "b.test")  # resolves to loopback: refused
    alone = time.monotonic() - alone_started

    def attack(source: str, host: str) -> None:
        with contextlib.suppress(OSError):
            _ask(proxy_port, source, host)

    attackers = [
        threading.Thread(target=attack, args=(f"127.0.{10 + n}.1", f"slow{n}-{i}.a.test"))
        for n in range(ATTACKERS)
        for i in range(4)
    ]
    for thread in attackers:
        thread.start()
    time.sleep(0.3)  # every attacker's lookup is running
    started = time.monotonic()
    answer = _ask(proxy_port, "127.0.99.1", "b.test")
    took = time.monotonic() - started
    for thread in attackers:
        thread.join(SLOW_S * 8 + 10)
    print(f"bystander's decision alone {alone:.3f}s, beside {len(attackers)} slow lookups {took:.3f}s")
    assert b" 403 " in answer
    assert took < 1.0, took
