"""Request bodies in the gateway: held whole when small and within the sandbox's share, else streamed.

A body held whole can be sent again when a pooled upstream connection turns out stale; a streamed one
cannot (it is not kept) and goes to a fresh connection. Holding is bounded per body and per sandbox, so
what the gateway keeps for one sandbox does not grow with how many calls it makes or how large they are.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from .gateway_http import Request, read_chunk_end, read_chunk_size, read_trailers
from .gateway_streams import Progress, copy_chunked, copy_exact

# A body up to this size is held whole; past it, or past the sandbox's share, it streams.
RETRY_BODY_BYTES = 1024 * 1024
SANDBOX_BUFFER_BYTES = 4 * 1024 * 1024


class Shares:
    """Bytes of bodies held whole, per sandbox, each sandbox up to SANDBOX_BUFFER_BYTES."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def held(self, sandbox_id: str) -> int:
        return self._held.get(sandbox_id, 0)

    def reserve(self, sandbox_id: str, size: int) -> bool:
        if self.held(sandbox_id) + size > SANDBOX_BUFFER_BYTES:
            return False
        self._held[sandbox_id] = self.held(sandbox_id) + size
        return True

    def release(self, sandbox_id: str, size: int) -> None:
        left = self.held(sandbox_id) - size
        if left > 0:
            self._held[sandbox_id] = left
        else:
            self._held.pop(sandbox_id, None)


@dataclass
class Body:
    """What of a request body the gateway holds: ``data``, and whether that is all of it. When it is not,
    the rest streams from the client: ``length`` more bytes, or (chunked) a chunk of ``pending`` bytes
    whose size line was read, then the remaining chunks."""

    data: bytes = b""
    complete: bool = True
    length: int | None = None
    pending: int = 0
    # Gives the sandbox's share back once the body need not be kept (the answer's head arrived).
    release: Callable[[], None] | None = None

    def settle(self) -> None:
        """The body is sent and answered: drop it and give its share back (once)."""
        self.data = b""
        release, self.release = self.release, None
        if release is not None:
            release()


class ClientBroke(Exception):
    """The client's body stopped coming (closed, or silent too long) while it streamed upstream."""


async def take_body(
    request: Request,
    reader: asyncio.StreamReader,
    shares: Shares,
    sandbox_id: str,
    uploaded: Progress,
    timeout: float,
) -> Body:
    """Read a body whole when it is small and the sandbox's share has room; else only as far as needed
    to know it must stream (see ``Body``). ``timeout`` bounds each read."""
    if not request.has_body:
        return Body()
    reserve = RETRY_BODY_BYTES if request.chunked else request.length
    if reserve > RETRY_BODY_BYTES or not shares.reserve(sandbox_id, reserve):
        return Body(complete=False, length=None if request.chunked else request.length)
    body = Body(release=lambda: shares.release(sandbox_id, reserve))
    try:
        if not request.chunked:
            body.data = await asyncio.wait_for(reader.readexactly(request.length), timeout)
            uploaded.moved(len(body.data))
            return body
        parts: list[bytes] = []
        held = 0
        while True:
            size, _line = await asyncio.wait_for(read_chunk_size(reader), timeout)
            if size == 0 or held + size > RETRY_BODY_BYTES:
                break
            parts.append(await asyncio.wait_for(reader.readexactly(size), timeout))
            await asyncio.wait_for(read_chunk_end(reader), timeout)
            held += size
            uploaded.moved(size)
        body.data = b"".join(parts)
        if size == 0:
            await asyncio.wait_for(read_trailers(reader), timeout)  # a request's trailers are dropped
            return body
        body.complete, body.pending = False, size
        return body
    except BaseException:
        body.settle()
        raise


async def upload(
    client: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Body, uploaded: Progress, timeout: float
) -> None:
    """The rest of a streaming body, from the client to the upstream, piece by piece."""
    if body.length is not None:
        await copy_exact(client, writer, body.length, uploaded, piece_timeout=timeout)
        return
    if body.data:
        writer.write(b"%x\r\n%s\r\n" % (len(body.data), body.data))
        body.settle()
    if body.pending:
        writer.write(b"%x\r\n" % body.pending)
        await copy_exact(client, writer, body.pending, uploaded, piece_timeout=timeout)
        writer.write(await asyncio.wait_for(read_chunk_end(client), timeout))
    await copy_chunked(client, writer, uploaded, piece_timeout=timeout, keep_trailers=False)
