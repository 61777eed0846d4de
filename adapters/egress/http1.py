"""A strict parser of HTTP/1.1 request heads (RFC 9112), for the proxy.

The proxy refuses what a strict parser would not accept, because whatever it lets through, an upstream
may read differently (a bare LF one server takes for a line end and another for a byte of a value is a
second ``Host``). So, unlike the leniencies RFC 9112 allows a recipient, this parser refuses: a bare CR
or LF anywhere, obsolete line folding, leading empty lines, whitespace before a colon, control bytes
(NUL included) in the target or a value, more than one ``Host``, ``Content-Length`` or
``Transfer-Encoding``, both of the latter together, and any transfer coding but ``chunked``.

Why not h11 (DESIGN §10 prefers it): h11 accepts a bare LF as a line end and unfolds obs-fold, both
leniencies RFC 9112 permits and this proxy must refuse, so a scan of our own would be needed in front of
it anyway; the proxy parses heads only, never bodies or responses; and the egress package runs with a
bare python3 (standard library only), where a vendored copy would be one more thing to ship and keep in
step. h11 is the oracle of the property tests instead (tests/test_egress_http1.py): whatever this
parser accepts, h11 accepts with the same meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_HEADERS = 100

# token = 1*tchar (RFC 9110 §5.6.2)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# request-target: visible ASCII only (no space, no control byte, no obs-text).
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
# field-value: VCHAR / obs-text, with single SP / HTAB inside; OWS around it is stripped first.
_VALUE = re.compile(rb"([\x21-\x7e\x80-\xff]([\x21-\x7e\x80-\xff \t]*[\x21-\x7e\x80-\xff])?)?")
_DIGITS = re.compile(rb"[0-9]{1,15}")


class HeadError(Exception):
    """A head the proxy refuses: ``status`` and a one-line reason for the reply."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes
    # (lower-cased name, value without OWS), in the order received.
    headers: tuple[tuple[bytes, bytes], ...]
    # The body's length: 0 without Content-Length; None for chunked.
    content_length: int | None

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """The index just past the head's final CRLF CRLF in ``buffer``, or -1 while it is incomplete.

    ``start``: where to begin looking (the bytes before it were searched already). Raises HeadError once
    the buffer is over MAX_HEAD without an end, however many reads brought it."""
    end = buffer.find(b"\r\n\r\n", start, MAX_HEAD + 4)
    if end >= 0:
        return end + 4
    if len(buffer) >= MAX_HEAD:
        raise HeadError(431, f"request head larger than {MAX_HEAD // 1024} KiB")
    return -1


def parse_head(head: bytes) -> RequestHead:
    """Parse one request head: ``head`` ends with CRLF CRLF and holds nothing after it."""
    if not head.endswith(b"\r\n\r\n"):
        raise HeadError(400, "a request head ends with an empty line (CRLF CRLF)")
    lines = head[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise HeadError(400, "a bare CR or LF in the request head (lines end with CRLF)")
    method, target, version = _request_line(lines[0])
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        headers.append(_field(line))
        if len(headers) > MAX_HEADERS:
            raise HeadError(431, f"more than {MAX_HEADERS} header fields")
    counts: dict[bytes, int] = {}
    for name, _ in headers:
        counts[name] = counts.get(name, 0) + 1
    for single in (b"host", b"content-length", b"transfer-encoding"):
        if counts.get(single, 0) > 1:
            raise HeadError(400, f"more than one {single.decode()} header")
    if version == b"HTTP/1.1" and not counts.get(b"host"):
        raise HeadError(400, "an HTTP/1.1 request needs a Host header")
    return RequestHead(method, target, version, tuple(headers), _body_length(headers, version))


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    if not line:
        raise HeadError(400, "an empty line where the request line belongs")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HeadError(400, "the request line is METHOD SP TARGET SP VERSION, single spaces")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HeadError(400, "the method is not a token")
    if not _TARGET.fullmatch(target):
        raise HeadError(400, "the request target holds a control byte, a space or a non-ASCII byte")
    if not _VERSION.fullmatch(version):
        if re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
            raise HeadError(505, "this proxy speaks HTTP/1.0 and HTTP/1.1")
        raise HeadError(400, "the request line does not end with HTTP/1.x")
    return method, target, version


def _field(line: bytes) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise HeadError(400, "obsolete line folding (a header line starting with whitespace)")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise HeadError(400, "a header line is not NAME: VALUE (no whitespace before the colon)")
    value = value.strip(b" \t")
    if not _VALUE.fullmatch(value):
        raise HeadError(400, f"the value of {name.decode('ascii')} holds a control byte")
    return name.lower(), value


def _body_length(headers: list[tuple[bytes, bytes]], version: bytes) -> int | None:
    values = dict(headers)
    length, coding = values.get(b"content-length"), values.get(b"transfer-encoding")
    if length is not None and coding is not None:
        raise HeadError(400, "both Content-Length and Transfer-Encoding (a request smuggling pattern)")
    if coding is not None:
        if version == b"HTTP/1.0":
            raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if coding.lower() != b"chunked":
            raise HeadError(501, "the only transfer coding this proxy accepts is chunked")
        return None
    if length is None:
        return 0
    if not _DIGITS.fullmatch(length):
        raise HeadError(400, "Content-Length is not one decimal number")
    return int(length)
