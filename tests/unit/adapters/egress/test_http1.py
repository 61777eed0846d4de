"""The proxy's head parser against h11 (a strict, well-kept parser): property-based.

Whatever bytes arrive, our parser either refuses them or accepts exactly what h11 accepts, with the same
method, target, version and header fields; well-formed heads are accepted by both alike. Our parser is
stricter than h11 on purpose (bare LF, obs-fold, duplicate lengths): refusing more is allowed, never
reading a head differently.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.egress.http1 import MAX_HEAD, HeadError, RequestHead, head_end, parse_head

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
token = st.text(TCHAR, min_size=1, max_size=12).map(str.encode)
# Bytes an attacker would try: separators, controls, whitespace, the colon.
nasty = st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b"\r\n ", b"\x7f", b"\xff", b","])
fragment = st.one_of(token, nasty, st.binary(max_size=6))
loose = st.lists(fragment, min_size=0, max_size=6).map(b"".join)
separator = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n\t", b"\r\n "])


def ours(data: bytes) -> RequestHead | None:
    try:
        end = head_end(data)
        if end < 0 or end != len(data):
            return None
        return parse_head(data)
    except HeadError:
        return None


def theirs(data: bytes) -> h11.Request | None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD + 4)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def same(mine: RequestHead, h11_request: h11.Request) -> bool:
    return (
        mine.method == h11_request.method
        and mine.target == h11_request.target
        and mine.version == b"HTTP/" + h11_request.http_version
        and list(mine.headers) == [(bytes(n), bytes(v)) for n, v in h11_request.headers]
    )


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    method = draw(st.one_of(st.sampled_from([b"GET", b"CONNECT", b"POST"]), loose))
    target = draw(st.one_of(st.sampled_from([b"http://a.test/x", b"a.test:443", b"/"]), loose))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]))
    spaces = draw(st.sampled_from([b" ", b" ", b"  ", b"\t"]))
    lines = [method + spaces + target + b" " + version]
    fields = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"X-A"]), loose),
                st.sampled_from([b":", b": ", b" :", b":\t"]),
                st.one_of(st.sampled_from([b"a.test", b"0", b"1", b"chunked", b"1, 1"]), loose),
            ),
            max_size=5,
        )
    )
    lines += [name + colon + value for name, colon, value in fields]
    seps = [draw(separator) for _ in lines]
    return b"".join(line + sep for line, sep in zip(lines, seps, strict=True)) + b"\r\n"


@settings(max_examples=3000, deadline=None)
@given(heads())
def test_structured_heads_are_refused_or_read_as_h11_reads_them(data: bytes) -> None:
    mine = ours(data)
    if mine is not None:
        h11_request = theirs(data)
        assert h11_request is not None, data
        assert same(mine, h11_request), data


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b + b"\r\n\r\n"))
def test_any_bytes_are_refused_or_read_as_h11_reads_them(data: bytes) -> None:
    mine = ours(data)
    if mine is not None:
        h11_request = theirs(data)
        assert h11_request is not None and same(mine, h11_request), data


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from([b"GET", b"POST", b"PUT"]),
    st.lists(st.tuples(token, st.text(TCHAR + " ;=/", max_size=20).map(str.encode)), max_size=6),
)
def test_well_formed_heads_are_accepted_as_h11_accepts_them(
    method: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    fields = [
        (n, v) for n, v in fields if n.lower() not in (b"host", b"content-length", b"transfer-encoding")
    ]
    data = method + b" http://a.test/p HTTP/1.1\r\nHost: a.test\r\n"
    data += b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n"
    mine, h11_request = ours(data), theirs(data)
    assert mine is not None and h11_request is not None
    assert same(mine, h11_request)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: 1\nHost: evil\r\n\r\n", 400),
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET http://a/\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (b"GET http://a/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ],
)
def test_each_smuggling_shape_is_refused_with_its_status(head: bytes, status: int) -> None:
    with pytest.raises(HeadError) as refused:
        parse_head(head)
    assert refused.value.status == status


def test_the_head_limit_holds_over_the_whole_buffer() -> None:
    assert head_end(b"GET / HTTP/1.1\r\n") == -1
    with pytest.raises(HeadError) as refused:
        head_end(b"X" * MAX_HEAD)
    assert refused.value.status == 431
    # The end is found from where the last search stopped, across the read boundary.
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", 20) == len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
