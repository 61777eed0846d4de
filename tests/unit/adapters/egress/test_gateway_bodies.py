"""Request bodies in the gateway (bodies.take_body, bodies.upload): held whole when small, else streamed.

Each test pins a behaviour a one-line mutant of bodies.py changed unnoticed (docs/testing.md)."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_lifecycle.adapters.egress.bodies import (
    RETRY_BODY_BYTES,
    SANDBOX_BUFFER_BYTES,
    Body,
    Shares,
    take_body,
    upload,
)
from sandbox_lifecycle.adapters.egress.gateway_http import BadRequest, Request
from sandbox_lifecycle.adapters.egress.gateway_streams import Progress


class Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += bytes(data)

    async def drain(self) -> None:
        return None


def request(*, length: int = 0, chunked: bool = False) -> Request:
    return Request("POST", "/v1/messages", "HTTP/1.1", [("host", "h")], length=length, chunked=chunked)


def take(req: Request, sent: bytes, shares: Shares | None = None) -> tuple[Body, Progress, bytes, Shares]:
    """The body taken from a client that sent ``sent`` (and then nothing), and what is left unread."""
    shares = shares or Shares()
    uploaded = Progress(5.0)

    async def main() -> tuple[Body, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(sent)
        reader.feed_eof()
        body = await take_body(req, reader, shares, "sbx1", uploaded, 5.0)
        return body, await reader.read()

    body, left = asyncio.run(main())
    return body, uploaded, left, shares


def test_no_body_is_complete_and_holds_nothing() -> None:
    body, uploaded, left, shares = take(request(), b"next")
    assert (body.data, body.complete, body.length, uploaded.sent) == (b"", True, None, 0)
    assert left == b"next" and shares.held("sbx1") == 0


def test_a_small_body_is_held_whole_within_the_share_until_settled() -> None:
    body, uploaded, left, shares = take(request(length=5), b"helloNEXT")
    assert (body.data, body.complete, uploaded.sent, left) == (b"hello", True, 5, b"NEXT")
    assert shares.held("sbx1") == 5
    body.settle()
    body.settle()  # once only
    assert shares.held("sbx1") == 0 and body.data == b""


def test_a_large_body_or_one_past_the_share_streams_unread() -> None:
    body, uploaded, left, shares = take(request(length=RETRY_BODY_BYTES + 1), b"abc")
    assert (body.complete, body.length, uploaded.sent, left) == (False, RETRY_BODY_BYTES + 1, 0, b"abc")
    assert shares.held("sbx1") == 0
    full = Shares()
    assert full.reserve("sbx1", SANDBOX_BUFFER_BYTES - 4)
    body, _, left, _ = take(request(length=5), b"hello", full)
    assert (body.complete, body.length, left) == (False, 5, b"hello")
    chunked, _, _, _ = take(request(chunked=True), b"5\r\nhello\r\n0\r\n\r\n", full)
    assert (chunked.complete, chunked.length) == (False, None)


def test_the_largest_held_body_is_held() -> None:
    data = b"x" * RETRY_BODY_BYTES
    body, _, _, shares = take(request(length=len(data)), data)
    assert body.complete and body.data == data and shares.held("sbx1") == RETRY_BODY_BYTES


def test_a_small_chunked_body_is_held_and_its_trailers_read_and_dropped() -> None:
    sent = b"5\r\nhello\r\n3;x=y\r\n!!!\r\n0\r\nX-T: 1\r\n\r\nNEXT"
    body, uploaded, left, shares = take(request(chunked=True), sent)
    assert (body.data, body.complete, body.pending, uploaded.sent) == (b"hello!!!", True, 0, 8)
    assert left == b"NEXT" and shares.held("sbx1") == RETRY_BODY_BYTES
    body.settle()
    assert shares.held("sbx1") == 0


def test_a_chunked_body_growing_past_the_bound_keeps_what_it_held_and_streams_the_rest() -> None:
    first, second = b"a" * (RETRY_BODY_BYTES - 10), b"b" * 20
    sent = b"%x\r\n%s\r\n%x\r\n%sNEXT" % (len(first), first, len(second), second)
    body, uploaded, left, _ = take(request(chunked=True), sent)
    assert (body.data, body.complete, body.pending, uploaded.sent) == (first, False, 20, len(first))
    assert left == second + b"NEXT"  # the pending chunk's data is not read yet


def test_a_client_that_stops_mid_body_gets_its_share_back() -> None:
    shares = Shares()
    with pytest.raises(asyncio.IncompleteReadError):
        take(request(length=10), b"short", shares)
    assert shares.held("sbx1") == 0
    with pytest.raises(BadRequest):
        take(request(chunked=True), b"5\r\nhelloXX", shares)
    assert shares.held("sbx1") == 0


def uploaded_by(body: Body, rest: bytes) -> tuple[bytes, int, bytes]:
    writer, uploaded = Writer(), Progress(5.0)

    async def main() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(rest)
        reader.feed_eof()
        await upload(reader, writer, body, uploaded, 5.0)
        return await reader.read()

    left = asyncio.run(main())
    return writer.data, uploaded.sent, left


def test_a_body_by_length_streams_exactly_its_length() -> None:
    data, sent, left = uploaded_by(Body(complete=False, length=5), b"helloNEXT")
    assert (data, sent, left) == (b"hello", 5, b"NEXT")


def test_a_chunked_body_streams_what_was_held_then_the_pending_chunk_then_the_rest() -> None:
    released: list[int] = []
    body = Body(data=b"held", complete=False, pending=3, release=lambda: released.append(1))
    data, sent, left = uploaded_by(body, b"abc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nNEXT")
    assert data == b"4\r\nheld\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"  # trailers of a request are dropped
    assert (sent, left, released, body.data) == (5, b"NEXT", [1], b"")


def test_a_chunked_body_with_nothing_held_streams_from_its_first_chunk() -> None:
    data, sent, _ = uploaded_by(Body(complete=False), b"2\r\nde\r\n0\r\n\r\n")
    assert (data, sent) == (b"2\r\nde\r\n0\r\n\r\n", 2)
