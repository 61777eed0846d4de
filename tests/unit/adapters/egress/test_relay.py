"""The egress relay's buffer pool: bounded in total and per sandbox (issue 20: gaps targeted mutation
testing found). The pumps themselves are exercised through the proxy in test_egress_proxy*.py."""

from __future__ import annotations

import asyncio
import socket

from sandbox_lifecycle.adapters.egress.relay import BufferPool, pump


def test_the_default_pool_holds_at_most_64_buffers_and_16_per_sandbox() -> None:
    pool = BufferPool()
    taken = {owner: [pool.take(owner) for _ in range(16)] for owner in ("a", "b", "c", "d")}
    assert all(b is not None and len(b) == 256 * 1024 for bs in taken.values() for b in bs)
    assert pool.take("a") is None  # a's share is used up
    assert pool.take("e") is None  # and the pool is empty: 64 in flight, 16 MiB
    assert pool.held() == {"a": 16, "b": 16, "c": 16, "d": 16}


def test_a_buffer_given_back_is_reused_and_frees_its_owner_s_share() -> None:
    pool = BufferPool(total=2, per_owner=1)
    first = pool.take("a")
    assert first is not None and pool.take("a") is None
    pool.give("a", first)
    assert pool.held() == {}
    assert pool.take("b") is first  # reused, not a new allocation


def _pump_through(pool: BufferPool, data: bytes, limit: int | None = None) -> tuple[int, bytes]:
    """Pump ``data`` from one socket pair to another (both local, non-blocking), bounded in time."""
    src_in, src = socket.socketpair()
    dst, dst_out = socket.socketpair()
    with src_in, src, dst, dst_out:
        for sock in (src, dst):
            sock.setblocking(False)
        src_in.sendall(data)
        src_in.shutdown(socket.SHUT_WR)

        async def run() -> int:
            async with asyncio.timeout(10):
                return await pump(src, dst, pool, "a", limit=limit)

        moved = asyncio.run(run())
        dst.shutdown(socket.SHUT_WR)
        received = b""
        for _ in range(1000):  # bounded: ends at the shutdown above
            chunk = dst_out.recv(65536)
            if not chunk:
                break
            received += chunk
    return moved, received


def test_a_pump_moves_everything_through_the_pool_and_gives_every_buffer_back() -> None:
    pool = BufferPool()
    data = bytes(range(256)) * 256
    assert _pump_through(pool, data) == (len(data), data)
    assert pool.held() == {}
    assert all(len(buffer) == 256 * 1024 for buffer in pool._free)  # only chunk buffers return to it


def test_a_pump_with_no_pool_buffer_left_goes_on_through_its_own_small_one() -> None:
    data = b"x" * 50_000
    assert _pump_through(BufferPool(total=0), data) == (len(data), data)


def test_a_pump_stops_at_its_limit() -> None:
    assert _pump_through(BufferPool(), b"0123456789", limit=4) == (4, b"0123")
