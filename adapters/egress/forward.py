"""A port forwarder: what ``url(port)`` of a Docker sandbox points at.

It runs in a container of its own, on a normal bridge (where the engine publishes its port on the host's
loopback) and on the sandbox's internal network, and copies each connection to the sandbox's address.
The sandbox gets no route out of it: the forwarder only ever connects to that one address and port.
One asyncio loop serves every connection, as the proxy does (no thread per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from .relay import BufferPool, pump

LISTEN_PORT = 18080
CONNECT_TIMEOUT_S = 10.0


def serve(target_host: str, target_port: int, listen_port: int = LISTEN_PORT) -> None:
    asyncio.run(_serve(target_host, target_port, listen_port))


async def _serve(host: str, port: int, listen_port: int) -> None:
    server = socket.create_server(("0.0.0.0", listen_port), backlog=128)
    server.setblocking(False)
    print(f"forwarding :{listen_port} -> {host}:{port}", flush=True)
    loop = asyncio.get_running_loop()
    pipes = BufferPool()
    tasks: set[asyncio.Task[None]] = set()
    while True:
        try:
            client, _ = await loop.sock_accept(server)
        except OSError:
            await asyncio.sleep(0.1)  # out of descriptors for a moment: keep accepting
            continue
        task = asyncio.create_task(_one(client, host, port, pipes))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _one(client: socket.socket, host: str, port: int, pipes: BufferPool) -> None:
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    with client, contextlib.suppress(OSError, TimeoutError):
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        with upstream:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await loop.sock_connect(upstream, (host, port))
            # Both ways until both have ended; the client's end is passed on as a half-close.
            up = asyncio.create_task(_one_way(client, upstream, pipes))
            down = asyncio.create_task(_one_way(upstream, client, pipes))
            await asyncio.gather(up, down)


async def _one_way(src: socket.socket, dst: socket.socket, pipes: BufferPool) -> None:
    try:
        await pump(src, dst, pipes, "forward")
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
