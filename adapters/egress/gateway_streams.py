"""Moving bodies through the gateway with bounded memory, and its pool of upstream connections.

Every copy here reads at most ``PIECE`` bytes, writes them and waits for the writer to drain before the
next read: what one call holds is a piece and the transports' buffers, whatever size the body is. A
streamed answer (server-sent events) reaches the sandbox when the model sends it; a streamed request
body reaches the upstream as the sandbox sends it, and an unauthenticated one is never read at all.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import asyncio
import time

from .gateway_http import read_chunk_end, read_chunk_size, read_trailers
from .redact import Redactor, redact
from .token_tally import TokenTally

PIECE = 64 * 1024
POOL_PER_UPSTREAM = 8
POOL_IDLE_SECONDS = 20.0

# (scheme, host, port, address connected to)
PoolKey = tuple[str, str, int, str]


class Pool:
    """Idle upstream connections per upstream, newest first, each dropped after a while."""

    def __init__(self) -> None:
        self._idle: dict[PoolKey, list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    def take(self, key: PoolKey) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        idle = self._idle.get(key, [])
        now = time.monotonic()
        while idle:
            since, reader, writer = idle.pop()
            if now - since < POOL_IDLE_SECONDS and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    def give(self, key: PoolKey, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= POOL_PER_UPSTREAM:
            writer.close()
            return
        idle.append((time.monotonic(), reader, writer))

    def close(self) -> None:
        for idle in self._idle.values():
            for _since, _reader, writer in idle:
                writer.close()
        self._idle.clear()


class Progress:
    """What a relay forwarded so far (a broken-off transfer is still counted for what it carried), and
    the silence deadline it pushes back with every piece."""

    def __init__(self, timeout: float) -> None:
        self.sent = 0
        self.timeout = timeout
        self.deadline: asyncio.Timeout | None = None
        # Reads the tokens a model answer reports as it passes (token_tally.py); None: not a model answer.
        self.tally: TokenTally | None = None
        # The request's progress points to its answer's, where the call's bookkeeping finds the tally.
        self.answer: Progress | None = None

    def carried(self, data: bytes) -> None:
        self.moved(len(data))
        if self.tally is not None:
            self.tally.feed(data)

    def moved(self, size: int) -> None:
        self.sent += size
        if self.deadline is not None:
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.timeout)


async def _piece(reader: asyncio.StreamReader, size: int, timeout: float | None) -> bytes:
    data = await asyncio.wait_for(reader.read(min(size, PIECE)), timeout)
    if not data:
        raise asyncio.IncompleteReadError(b"", size)
    return data


async def copy_exact(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    length: int,
    progress: Progress,
    *,
    piece_timeout: float | None = None,
) -> None:
    """Copy ``length`` bytes as they come."""
    remaining = length
    while remaining:
        data = await _piece(reader, remaining, piece_timeout)
        writer.write(data)
        await writer.drain()
        remaining -= len(data)
        progress.carried(data)


async def copy_until_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
) -> None:
    """Copy until the reader's end, re-framed as chunks so the writer's connection can go on."""
    while data := await reader.read(PIECE):
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
        progress.carried(data)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def copy_chunked(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    progress: Progress,
    *,
    piece_timeout: float | None = None,
    keep_trailers: bool = True,
) -> None:
    """Copy a chunked body piece by piece, checking its framing; re-framed by us (each chunk the same
    size, extensions dropped), so what the writer gets is well formed whatever the reader sent."""
    while True:
        size, _line = await asyncio.wait_for(read_chunk_size(reader), piece_timeout)
        if size == 0:
            trailers = await asyncio.wait_for(read_trailers(reader), piece_timeout)
            writer.write(b"0\r\n" + (b"".join(trailers) if keep_trailers else b"\r\n"))
            await writer.drain()
            return
        writer.write(b"%x\r\n" % size)
        await copy_exact(reader, writer, size, progress, piece_timeout=piece_timeout)
        writer.write(await asyncio.wait_for(read_chunk_end(reader), piece_timeout))
        await writer.drain()


async def copy_redacted(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    progress: Progress,
    redactor: Redactor,
    *,
    chunked: bool,
    length: int | None,
) -> None:
    """Copy an answer's body through ``redactor`` (redact.py): de-chunked when ``chunked``, so a secret
    split by the upstream's chunk-size lines is seen whole. A body of ``length`` bytes keeps it (a
    redacted piece is as long as the original); any other is re-framed as chunks, as the copies above."""

    async def put(data: bytes) -> None:
        if data:
            writer.write(data if length is not None else b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()

    trailers = [b"\r\n"]
    if chunked:
        while size := (await read_chunk_size(reader))[0]:
            while size:
                data = await _piece(reader, size, None)
                size -= len(data)
                progress.carried(data)
                await put(redactor.feed(data))
            await read_chunk_end(reader)
        trailers = await read_trailers(reader)
    elif length is not None:
        left = length
        while left:
            data = await _piece(reader, left, None)
            left -= len(data)
            progress.carried(data)
            await put(redactor.feed(data))
    else:
        while data := await reader.read(PIECE):
            progress.carried(data)
            await put(redactor.feed(data))
    await put(redactor.flush())
    if length is None:
        writer.write(b"0\r\n" + redact(b"".join(trailers), redactor.secrets))
        await writer.drain()


async def discard(reader: asyncio.StreamReader, most: int, seconds: float) -> None:
    """Read and drop what a refused client still sends (at most ``most`` bytes, ``seconds``), so its
    side sees the refusal before the connection closes rather than a reset; nothing is kept."""
    left = most
    try:
        async with asyncio.timeout(seconds):
            while left > 0 and (data := await reader.read(min(left, PIECE))):
                left -= len(data)
    except (TimeoutError, OSError):
        pass
