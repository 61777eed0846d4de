"""The proxy's head reader, policy and pump through their public functions.

Each test pins a behaviour a one-line mutant of http1.py, policy.py or relay.py changed unnoticed
(docs/testing.md)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sandbox_lifecycle.adapters.egress.http1 import HeadError, head_end, parse_head
from sandbox_lifecycle.adapters.egress.policy import Rule, load_policy, parse_rules, policy_document
from sandbox_lifecycle.adapters.egress.relay import BufferPool, pump


def test_a_head_is_bounded_at_64_kib_without_its_end() -> None:
    assert head_end(b"x" * (64 * 1024 - 1)) == -1
    with pytest.raises(HeadError) as refused:
        head_end(b"x" * (64 * 1024))
    assert refused.value.status == 431


def test_a_parsed_head_gives_a_header_by_its_lower_case_name() -> None:
    head = parse_head(b"GET http://up.test/ HTTP/1.1\r\nHost: up.test\r\nX-Two: a\r\n\r\n")
    assert head.get(b"host") == b"up.test"
    assert head.get(b"x-two") == b"a"
    assert head.get(b"x-none") is None


def test_raw_addresses_in_the_allow_list_are_skipped_with_or_without_a_port() -> None:
    entries = ["[2001:db8::1]:443", "[2001:db8::1]", "192.0.2.1:80", "10.0.0.0/8", "git.test:8443"]
    assert parse_rules(entries) == (Rule("git.test", 8443),)


def test_a_name_that_does_not_resolve_is_refused_with_a_502_and_no_address() -> None:
    policy = load_policy(policy_document("s1", "data-app", "10.1.0.0/28", ["git.test"], [], "V"))

    def resolver(host: str, port: int) -> list[str]:
        raise OSError("no such name")

    decision = policy.decide("git.test", 443, resolver)
    assert decision.address is None and decision.status == 502
    assert decision.reason.startswith("cannot resolve git.test")


def test_a_pump_reports_every_byte_it_moved() -> None:
    data = bytes(range(256)) * 2048  # 512 KiB: more than one chunk
    reported: list[int] = []
    src_in, src = socket.socketpair()
    dst, dst_out = socket.socketpair()
    with src_in, src, dst, dst_out:
        for sock in (src, dst, dst_out):
            sock.setblocking(False)

        async def run() -> tuple[int, bytes]:
            received = bytearray()

            async def drain() -> None:
                loop = asyncio.get_running_loop()
                while len(received) < len(data):
                    received.extend(await loop.sock_recv(dst_out, 65536))

            async def feed() -> None:
                await asyncio.get_running_loop().sock_sendall(src_in, data)
                src_in.shutdown(socket.SHUT_WR)

            async with asyncio.timeout(10):
                src_in.setblocking(False)
                results = await asyncio.gather(
                    pump(src, dst, BufferPool(), "a", moved=reported.append), drain(), feed()
                )
            return results[0], bytes(received)

        moved, received = asyncio.run(run())
    assert moved == len(data) and received == data
    assert sum(reported) == len(data) and all(n > 0 for n in reported)
