"""A policy changed while the sandbox runs (set_egress): what an allow-list may hold, how fast the proxy
sees a rewritten policy, and an open tunnel to a host no longer allowed being cut. On loopback
(127.0.0.0/8 stands in for one sandbox network), the allowed host pinned to a loopback server."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.policy import (
    PolicyBook,
    PolicyError,
    check_allow,
    policy_document,
    write_policy,
)
from sandbox_lifecycle.adapters.egress.proxy import POLICY_WATCH_S, EgressProxy


@pytest.mark.parametrize(
    "entry",
    [
        "10.0.0.1",
        "169.254.169.254",
        "127.0.0.1:8080",
        "[::1]:443",
        "::1",
        "10.0.0.0/8",
        "2130706433",  # 127.0.0.1 as inet_aton reads it
        "0x7f.0.0.1",
        "localhost",
        "api.localhost",
        "metadata.google.internal",
        "*",
        "*.com",
        "a.*.example.com",
        "exa mple.com",
        "example.com:0",
        "example.com:99999",
        "",
    ],
)
def test_a_live_allow_list_refuses_addresses_loopback_metadata_and_broad_wildcards(entry: str) -> None:
    with pytest.raises(PolicyError):
        check_allow([entry])


def test_a_live_allow_list_keeps_names_as_the_kind_lists_parse_them() -> None:
    assert check_allow(["PKGS.test.", "*.Example.com", "files.example.com:8443", "pkgs.test"]) == (
        "pkgs.test",
        "*.example.com",
        "files.example.com:8443",
    )
    assert check_allow([]) == ()


def _policy(tmp_path: Path, allow: list[str], pins: list[str]) -> None:
    write_policy(str(tmp_path), policy_document("s1", "data-app", "127.0.0.0/8", allow, pins, "V"))


def test_a_policy_rewritten_in_the_same_clock_tick_is_still_read(tmp_path: Path) -> None:
    _policy(tmp_path, ["a.test"], [])
    book = PolicyBook(str(tmp_path))
    first = book.for_source("127.0.0.2")
    assert first is not None and [r.host for r in first.rules] == ["a.test"]
    folder = tmp_path / "policies"
    stamp = os.stat(folder).st_mtime_ns
    _policy(tmp_path, ["b.test"], [])
    # The worst case: the rewrite left the folder's mtime as the first read saw it.
    os.utime(folder, ns=(stamp, stamp))
    deadline = time.monotonic() + 1.0
    hosts: list[str] = []
    while time.monotonic() < deadline:
        found = book.for_source("127.0.0.2")
        hosts = [r.host for r in found.rules] if found else []
        if hosts == ["b.test"]:
            break
        time.sleep(0.01)
    assert hosts == ["b.test"]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _tunnel(proxy_port: int, host: str, port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_closing_a_host_cuts_its_open_tunnels_and_refuses_new_ones_within_a_second(
    tmp_path: Path, echo: int
) -> None:
    pins = [f"open.test:{echo}:127.0.0.1", f"kept.test:{echo}:127.0.0.1"]
    _policy(tmp_path, [f"open.test:{echo}", f"kept.test:{echo}"], pins)
    lines: list[str] = []
    proxy = EgressProxy(PolicyBook(str(tmp_path)), log=lines.append)
    port = int(proxy.bind("127.0.0.1", 0).getsockname()[1])
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        closing, kept = _tunnel(port, "open.test", echo), _tunnel(port, "kept.test", echo)
        for sock in (closing, kept):
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        _policy(tmp_path, [f"kept.test:{echo}"], pins)  # open.test no longer allowed
        started = time.monotonic()
        closing.settimeout(2 * POLICY_WATCH_S + 1.0)
        assert closing.recv(4096) == b""  # the proxy ended the tunnel
        assert time.monotonic() - started < 1.0
        assert any("egress cut sandbox=s1 open.test" in line for line in lines)
        kept.sendall(b"still")
        assert kept.recv(5) == b"still"  # a tunnel still allowed is left alone
        with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
            again.sendall(f"CONNECT open.test:{echo} HTTP/1.1\r\nHost: open.test:{echo}\r\n\r\n".encode())
            assert again.recv(4096).startswith(b"HTTP/1.1 403")
        closing.close()
        kept.close()
    finally:
        proxy.close()
