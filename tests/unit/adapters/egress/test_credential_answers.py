"""The answer to a credentialed request as the proxy relays it: refused when the redaction could not read
it (a content coding, a byte range), de-chunked, redacted and re-framed when chunked."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.egress import inject
from sandbox_lifecycle.adapters.egress.redact import AnswerRefused, Redactor, check_answer, redact, secrets_of

SECRET = "PLANTED-answer-" + "5b2e8c1f9a7d"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip",
        b"HTTP/1.1 200 OK\r\ncontent-encoding: identity\r\nCONTENT-ENCODING: br",
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/9",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
        b"garbage",
    ],
)
def test_an_answer_the_redaction_cannot_read_is_refused(head: bytes) -> None:
    with pytest.raises(AnswerRefused):
        check_answer(head)


@pytest.mark.parametrize(
    ("head", "chunked"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3", False),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: identity", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked", True),
        (b"HTTP/1.0 404 Not Found", False),
    ],
)
def test_an_answer_in_clear_goes_along(head: bytes, chunked: bool) -> None:
    assert check_answer(head) is chunked


def _relayed(framed: bytes) -> bytes:
    async def run() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(framed)
        reader.feed_eof()
        out: list[bytes] = []

        async def send(data: bytes) -> int:
            out.append(data)
            return len(data)

        sent = await inject._relay_chunked(reader, send, Redactor([f"Bearer {SECRET}"]), 5)
        assert sent == sum(map(len, out))
        return b"".join(out)

    return asyncio.run(run())


def _dechunk(framed: bytes) -> tuple[bytes, bytes]:
    body, rest = b"", framed
    for _ in range(10_000):
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body, rest
        assert rest[size : size + 2] == b"\r\n"
        body, rest = body + rest[:size], rest[size + 2 :]
    raise AssertionError("unbounded")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.binary(max_size=40))
def test_a_secret_split_by_chunk_framing_is_starred(sizes: list[int], prefix: bytes) -> None:
    body = prefix + b"Authorization: Bearer " + SECRET.encode() + b"\r\nend"
    pieces, at = [], 0
    for size in sizes * (len(body) // len(sizes) + 1):
        if at >= len(body):
            break
        pieces.append(body[at : at + size])
        at += size
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-T: " + SECRET.encode()
    framed += b"\r\n\r\n"
    got, trailers = _dechunk(_relayed(framed))
    assert got == redact(body, secrets_of([f"Bearer {SECRET}"])) and len(got) == len(body)
    assert SECRET.encode() not in got and trailers == b"X-T: " + b"*" * len(SECRET) + b"\r\n\r\n"


def test_a_broken_framing_ends_the_answer_with_what_was_redacted() -> None:
    got, trailers = _dechunk(_relayed(b"5\r\nhello\r\nzz\r\n"))
    assert got == b"hello" and trailers == b"\r\n"
    got, _ = _dechunk(_relayed(b"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n"))
    assert got == b"hello"


def test_the_longest_secret_is_starred_first_and_short_words_stay() -> None:
    secrets = secrets_of(["abcdefghij", "abcdefghijXYZ", "Bearer abcdefg"])
    assert redact(b"<abcdefghijXYZ>", secrets) == b"<" + b"*" * 13 + b">"
    assert redact(b"abcdefg", secrets) == b"abcdefg"  # a 7-character word is not a secret alone


def test_the_status_line_needs_a_code_and_the_last_transfer_coding_decides() -> None:
    assert check_answer(b"HTTP/1.1 200") is False
    assert check_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity, chunked") is True
    assert check_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity") is False
    for bad in [b"HTTP/1.1", b"HTTP/1.1 OK 200", b"HTTX/1.1 200 OK"]:
        with pytest.raises(AnswerRefused):
            check_answer(bad)
