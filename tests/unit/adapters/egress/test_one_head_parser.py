"""The proxy and the gateway read heads with one parser: on an origin-form head, whatever one refuses the
other refuses with the same status, and whatever one accepts the other reads the same way."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.egress.gateway_http import BadRequest, parse_request_head
from sandbox_lifecycle.adapters.egress.http1 import HeadError, parse_head

SMUGGLING = [
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nHost: evil\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 100 + b"\r\n",
]


@pytest.mark.parametrize("head", SMUGGLING)
def test_both_refuse_each_smuggling_shape_with_one_status(head: bytes) -> None:
    with pytest.raises(HeadError) as proxy:
        parse_head(head)
    with pytest.raises(BadRequest) as gateway:
        parse_request_head(head)
    assert proxy.value.status == gateway.value.status


# Well-formed lines, a folded one and one with a bare CR.
_LINES = (
    b"Host: a",
    b"host: b",
    b"Content-Length: 3",
    b"Transfer-Encoding: chunked",
    b"X-A: 1",
    b" x",
    b"X: a\rb",
)
_LINE = st.sampled_from(_LINES)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=5), st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]))
def test_on_origin_form_heads_the_two_agree(lines: list[bytes], version: bytes) -> None:
    head = b"POST /v1/messages " + version + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    try:
        proxy = parse_head(head)
    except HeadError as refused:
        with pytest.raises(BadRequest) as also:
            parse_request_head(head)
        assert also.value.status == refused.status
        return
    gateway = parse_request_head(head)
    assert [(k.lower().encode(), v.encode("latin-1")) for k, v in gateway.headers] == list(proxy.headers)
    assert gateway.chunked == (proxy.content_length is None)
    assert gateway.length == (proxy.content_length or 0)
