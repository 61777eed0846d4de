"""The gateway's HTTP/1.1 reading (gateway_http) and moving of bodies (gateway_streams), without sockets.

Each test pins a behaviour a one-line mutant of these modules changed unnoticed (docs/testing.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from sandbox_lifecycle.adapters.egress import gateway_streams as streams
from sandbox_lifecycle.adapters.egress.gateway_http import (
    MAX_HEADERS,
    MAX_TRAILER_LINES,
    BadRequest,
    Request,
    content_length,
    is_chunked,
    parse_request_head,
    read_chunk_end,
    read_chunk_size,
    read_head,
    read_trailers,
)

T = TypeVar("T")


class Writer:
    """What the copies need of an asyncio.StreamWriter: everything written, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


def run(
    make: Callable[[asyncio.StreamReader], Awaitable[T]], data: bytes, *, eof: bool = True, limit: int = 2**16
) -> T:
    async def main() -> T:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await make(reader)

    return asyncio.run(main())


def head(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n"


# --- heads ----------------------------------------------------------------------------------------


def test_a_request_with_a_length_is_read_whole() -> None:
    request = parse_request_head(head("POST /v1/messages?beta=true HTTP/1.1", "Host: h", "Content-Length: 5"))
    assert (request.method, request.target, request.version) == ("POST", "/v1/messages?beta=true", "HTTP/1.1")
    assert (request.length, request.chunked, request.has_body) == (5, False, True)
    assert request.header("content-length") == "5" and request.header("x-none") is None
    assert not request.wants_close()


def test_a_chunked_request_and_one_without_a_body() -> None:
    chunked = parse_request_head(head("POST / HTTP/1.1", "Host: h", "Transfer-Encoding: Chunked"))
    assert chunked.chunked and chunked.has_body and chunked.length == 0
    empty = parse_request_head(head("GET / HTTP/1.1", "Host: h", "Content-Length: 0"))
    assert not empty.has_body and not empty.chunked


def test_http_1_0_needs_no_host_and_closes() -> None:
    request = parse_request_head(head("GET / HTTP/1.0"))
    assert request.wants_close()
    assert parse_request_head(
        head("GET / HTTP/1.1", "Host: h", "Connection: Keep-Alive, Close")
    ).wants_close()
    assert not Request("GET", "/", "HTTP/1.1", [("Connection", "keep-alive")]).wants_close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (head("POST / HTTP/1.1", "Host: h", "Content-Length: 1", "Transfer-Encoding: chunked"), 400),
        (head("POST / HTTP/1.0", "Transfer-Encoding: chunked"), 400),
        (head("GET / HTTP/1.1"), 400),
        (head("GET / HTTP/1.1", "Host: a", "Host: b"), 400),
        (head("GET / HTTP/1.1", "Host: h", "Content-Length: 1", "Content-Length: 1"), 400),
        (head("GET / HTTP/1.1", "Host: h", "Content-Length: +1"), 400),
        (head("GET / HTTP/1.1", "Host: h", "Content-Length: " + "9" * 19), 400),
        (head("GET / HTTP/1.1", "Host: h", "Transfer-Encoding: gzip, chunked"), 501),
        (head("GET / HTTP/1.1", "Host: h", "X: a", " folded"), 400),
        (head("GET / HTTP/1.1", "Host: h", "X : a"), 400),
        (head("GET / HTTP/1.1", "Host: h", "X a"), 400),
        (head("GET / HTTP/1.1", "Host: h", "X: a\x01b"), 400),
        (head("GET / HTTP/1.1", "Host: h", "X: a\rb"), 400),
        (head("GET / HTTP/1.1", "Host: h", "X: a\nb"), 400),
        (head("GET /  HTTP/1.1", "Host: h"), 400),
        (head("GET / http/1.1", "Host: h"), 400),
        (head("GET / HTTP/2.0", "Host: h"), 505),  # well-formed, a version the gateway does not speak
        (head("GET http://h/ HTTP/1.1", "Host: h"), 400),
        (head("GET /%zz HTTP/1.1", "Host: h"), 400),
        (head("G(T / HTTP/1.1", "Host: h"), 400),
        (head("GET / HTTP/1.1", "Host: h", *[f"X-{n}: v" for n in range(MAX_HEADERS)]), 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nX: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n", 400),
    ],
)
def test_a_head_a_strict_parser_would_not_accept_is_refused(raw: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request_head(raw)
    assert refused.value.status == status


def test_the_most_header_lines_are_accepted() -> None:
    lines = ["Host: h", *[f"X-{n}: v" for n in range(MAX_HEADERS - 1)]]
    assert len(parse_request_head(head("GET / HTTP/1.1", *lines)).headers) == MAX_HEADERS


def test_values_keep_inner_spaces_and_lose_outer_ones() -> None:
    request = parse_request_head(head("GET / HTTP/1.1", "Host: h", "X:  a \tb\t"))
    assert request.header("x") == "a \tb"


def test_framing_headers_are_read_alone() -> None:
    assert content_length([("X", "1")]) is None
    assert content_length([("content-LENGTH", "012")]) == 12
    assert not is_chunked([("X", "chunked")])
    assert is_chunked([("transfer-encoding", " chunked ")])


# --- reading from a stream ------------------------------------------------------------------------


def test_a_head_is_read_through_its_blank_line() -> None:
    assert run(read_head, b"GET / HTTP/1.1\r\n\r\nrest") == b"GET / HTTP/1.1\r\n\r\n"
    assert run(read_head, b"") is None
    assert run(read_head, b" \r\n") is None
    with pytest.raises(BadRequest) as early:
        run(read_head, b"GET / HTTP/1.1\r\n")
    assert early.value.status == 400
    with pytest.raises(BadRequest) as large:
        run(read_head, b"X" * 200, eof=False, limit=100)
    assert large.value.status == 431


def test_chunk_sizes_are_hex_with_an_optional_extension() -> None:
    assert run(read_chunk_size, b"1a\r\n") == (26, b"1a\r\n")
    assert run(read_chunk_size, b"0;name=value\r\n") == (0, b"0;name=value\r\n")
    assert run(read_chunk_size, b"F" * 16 + b"\r\n")[0] == 16**16 - 1
    for bad in (b"g\r\n", b"1" * 17 + b"\r\n", b" 1\r\n", b"1\n\r\n", b"\r\n"):
        with pytest.raises(BadRequest):
            run(read_chunk_size, bad)
    with pytest.raises(BadRequest) as too_long:
        run(read_chunk_size, b"1" * 200, eof=False, limit=100)
    assert too_long.value.status == 400


def test_a_chunk_ends_in_crlf_only() -> None:
    assert run(read_chunk_end, b"\r\nmore") == b"\r\n"
    with pytest.raises(BadRequest) as refused:
        run(read_chunk_end, b"\n\r")
    assert refused.value.status == 400


def test_trailers_are_strict_header_lines_and_bounded() -> None:
    assert run(read_trailers, b"\r\n") == [b"\r\n"]
    assert run(read_trailers, b"A: b\r\n\r\n") == [b"A: b\r\n", b"\r\n"]
    with pytest.raises(BadRequest):
        run(read_trailers, b"A b\r\n\r\n")
    most = b"A: b\r\n" * MAX_TRAILER_LINES + b"\r\n"
    assert len(run(read_trailers, most)) == MAX_TRAILER_LINES + 1
    with pytest.raises(BadRequest):
        run(read_trailers, b"A: b\r\n" * (MAX_TRAILER_LINES + 1) + b"\r\n")


# --- moving bodies --------------------------------------------------------------------------------


def copied(
    copy: Callable[[asyncio.StreamReader, Writer, streams.Progress], Awaitable[None]], data: bytes
) -> tuple[Writer, streams.Progress, bytes]:
    writer, progress = Writer(), streams.Progress(5.0)

    async def make(reader: asyncio.StreamReader) -> bytes:
        await copy(reader, writer, progress)
        return await reader.read()

    left = run(make, data)
    return writer, progress, left


def test_an_exact_copy_takes_its_length_in_bounded_pieces() -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: several pieces
    writer, progress, left = copied(lambda r, w, p: streams.copy_exact(r, w, len(body), p), body + b"next")
    assert writer.data == body and left == b"next" and progress.sent == len(body)
    assert max(len(w) for w in writer.writes) <= streams.PIECE
    with pytest.raises(asyncio.IncompleteReadError):
        copied(lambda r, w, p: streams.copy_exact(r, w, 10, p), b"short")


def test_copying_until_close_reframes_as_chunks() -> None:
    writer, progress, _ = copied(streams.copy_until_close, b"abc")
    assert writer.data == b"3\r\nabc\r\n0\r\n\r\n" and progress.sent == 3


def test_a_chunked_copy_is_reframed_and_keeps_or_drops_trailers() -> None:
    sent = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\nnext"
    writer, progress, left = copied(streams.copy_chunked, sent)
    assert writer.data == b"5\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"
    assert progress.sent == 6 and left == b"next"
    dropped, _, _ = copied(lambda r, w, p: streams.copy_chunked(r, w, p, keep_trailers=False), sent)
    assert dropped.data == b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"
    with pytest.raises(BadRequest):
        copied(streams.copy_chunked, b"5\r\nhelloXX0\r\n\r\n")


def test_progress_pushes_its_deadline_back() -> None:
    async def main() -> tuple[float, float]:
        progress = streams.Progress(30.0)
        progress.moved(3)
        async with asyncio.timeout(1.0) as deadline:
            progress.deadline = deadline
            progress.moved(4)
            return deadline.when() or 0.0, asyncio.get_running_loop().time()

    when, now = asyncio.run(main())
    assert now + 29 < when <= now + 30


def test_discard_reads_at_most_what_it_may_and_stops_at_its_time() -> None:
    async def main() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b"0123456789")
        await streams.discard(reader, 4, 1.0)
        return await reader.read(100)

    assert asyncio.run(main()) == b"456789"

    async def several_pieces() -> bytes:
        reader = asyncio.StreamReader(limit=4 * streams.PIECE)
        reader.feed_data(b"x" * (2 * streams.PIECE) + b"after")
        await streams.discard(reader, 2 * streams.PIECE, 1.0)
        return await reader.read(100)

    assert asyncio.run(several_pieces()) == b"after"

    async def silent() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await streams.discard(asyncio.StreamReader(), 10, 0.05)
        return loop.time() - started

    assert asyncio.run(silent()) < 1.0


# --- the pool of upstream connections -------------------------------------------------------------

KEY = ("https", "h.example", 443, "192.0.2.1")


class Reader:
    """What the pool asks of an idle connection's reader: whether the upstream closed it."""

    def __init__(self, eof: bool) -> None:
        self.eof = eof

    def at_eof(self) -> bool:
        return self.eof


def connection(*, eof: bool = False) -> tuple[Reader, Writer]:
    return Reader(eof), Writer()


def test_the_pool_gives_back_the_newest_live_connection_of_its_upstream() -> None:
    pool = streams.Pool()
    assert pool.take(KEY) is None
    older, newer = connection(), connection()
    pool.give(KEY, *older)
    pool.give(KEY, *newer)
    assert pool.take(("https", "h.example", 443, "192.0.2.2")) is None
    assert pool.take(KEY) == newer
    assert pool.take(KEY) == older
    assert pool.take(KEY) is None


def test_the_pool_drops_ended_closing_and_old_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = streams.Pool()
    ended, closing, live = connection(eof=True), connection(), connection()
    closing[1].close()
    pool.give(KEY, *live)
    pool.give(KEY, *closing)
    pool.give(KEY, *ended)
    assert pool.take(KEY) == live
    assert ended[1].closed
    now = streams.time.monotonic()
    pool.give(KEY, *live)
    monkeypatch.setattr(streams.time, "monotonic", lambda: now + streams.POOL_IDLE_SECONDS + 1)
    assert pool.take(KEY) is None and live[1].closed


def test_the_pool_keeps_a_bounded_number_per_upstream_and_closes_all_at_the_end() -> None:
    pool = streams.Pool()
    kept = [connection() for _ in range(streams.POOL_PER_UPSTREAM)]
    for reader, writer in kept:
        pool.give(KEY, reader, writer)
    extra = connection()
    pool.give(KEY, *extra)
    assert extra[1].closed and not any(w.closed for _, w in kept)
    pool.close()
    assert all(w.closed for _, w in kept)
    assert pool.take(KEY) is None
