"""The one strict parser of HTTP/1.1 message heads (RFC 9112), for the proxy and the gateway alike.

Whatever a strict parser lets through, an upstream may read differently (a bare LF one server takes for a
line end and another for a byte of a value is a second ``Host``; a bare CR the gateway copied becomes a
second ``x-api-key`` upstream). So, unlike the leniencies RFC 9112 allows a recipient, this parser
refuses, never repairs: a bare CR or LF anywhere, obsolete line folding, leading empty lines, whitespace
before a colon, control bytes (NUL included) in the target or a value, more than one ``Host``,
``Content-Length`` or ``Transfer-Encoding``, both of the latter together, any transfer coding but
``chunked``, and a head larger than ``MAX_HEAD`` however many reads brought it.

The proxy (``proxy``) takes the head as ``parse_head`` reads it; the gateway (``gateway_http``) adds its
own narrower request line (origin-form targets only) and reads its upstreams' answer heads with
``split_lines`` and ``parse_fields``.

Why not h11 (DESIGN §10 prefers it): h11 accepts a bare LF as a line end and unfolds obs-fold, both
leniencies RFC 9112 permits and the egress point must refuse, so a scan of our own would be needed in
front of it anyway; the egress point parses heads only, its bodies are framed by the chunk reader of
``gateway_http`` and the pumps of ``relay``; and the egress package runs with a bare python3 (standard
library only), where a vendored copy would be one more thing to ship and keep in step. h11 is the oracle
of the property tests instead (tests of ``http1`` and of the gateway): whatever this parser accepts, h11
accepts with the same meaning.
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
_ANY_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
# field-value: VCHAR / obs-text, with SP / HTAB only between them; OWS around it is stripped first.
_VALUE = re.compile(rb"([\x21-\x7e\x80-\xff]([\x21-\x7e\x80-\xff \t]*[\x21-\x7e\x80-\xff])?)?")
_DIGITS = re.compile(rb"[0-9]{1,15}")
# The fields a message carries at most once, with the name a refusal gives them.
_SINGLE = {b"content-length": "Content-Length", b"transfer-encoding": "Transfer-Encoding"}


class HeadError(Exception):
    """A head refused with ``status`` and a one-line ``reason`` for the reply (``message`` too: the
    gateway's name for it, which also raises this for its upstreams' faults)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.message = reason


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


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request head as sent: its fields' names keep their case (the gateway forwards them so)."""

    method: bytes
    target: bytes
    version: bytes
    fields: tuple[tuple[bytes, bytes], ...]
    # The body's length: 0 without Content-Length; None for chunked.
    content_length: int | None


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


def split_lines(head: bytes) -> list[bytes]:
    """The lines of a head that ends with its first empty line; a CR or LF anywhere but in a CRLF is
    refused."""
    if head.find(b"\r\n\r\n") != len(head) - 4:
        raise HeadError(400, "a message head ends with its first empty line (CRLF CRLF)")
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise HeadError(400, "a bare CR or LF in the message head (lines end with CRLF only)")
    return lines


def parse_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """``NAME: VALUE`` lines as (name as sent, value without OWS)."""
    if len(lines) > MAX_HEADERS:
        raise HeadError(431, f"more than {MAX_HEADERS} header lines")
    return [_field(line) for line in lines]


def _field(line: bytes) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise HeadError(400, "obsolete line folding (a header line starting with whitespace)")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise HeadError(400, "a header line is malformed: not NAME: VALUE (no whitespace before the colon)")
    value = value.strip(b" \t")
    if not _VALUE.fullmatch(value):
        raise HeadError(400, f"the value of {name.decode('ascii')} holds a control byte")
    return name, value


def declared_length(values: list[bytes]) -> int | None:
    """The ``Content-Length`` of a message from the values of that field; None when it has none."""
    if not values:
        return None
    if len(values) != 1 or not _DIGITS.fullmatch(values[0]):
        raise HeadError(400, "Content-Length is not one decimal number")
    return int(values[0])


def is_chunked(values: list[bytes]) -> bool:
    """Whether the ``Transfer-Encoding`` values frame the body in chunks, the one coding accepted."""
    if not values:
        return False
    codings = [coding.strip(b" \t").lower() for value in values for coding in value.split(b",")]
    if codings != [b"chunked"]:
        raise HeadError(501, "the only transfer coding accepted is chunked")
    return True


def parse_request(head: bytes) -> ParsedRequest:
    """One request head: ``head`` ends with CRLF CRLF and holds nothing after it."""
    lines = split_lines(head)
    method, target, version = _request_line(lines[0])
    fields = parse_fields(lines[1:])
    values: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        values.setdefault(name.lower(), []).append(value)
    hosts = values.get(b"host", [])
    if len(hosts) > 1 or (not hosts and version == b"HTTP/1.1"):
        raise HeadError(400, "an HTTP/1.1 request carries exactly one Host header")
    for name, shown in _SINGLE.items():
        if len(values.get(name, [])) > 1:
            raise HeadError(400, f"more than one {shown} header")
    lengths, codings = values.get(b"content-length", []), values.get(b"transfer-encoding", [])
    if lengths and codings:
        raise HeadError(400, "both Content-Length and Transfer-Encoding (a request smuggling pattern)")
    if codings and version == b"HTTP/1.0":
        raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
    length = None if is_chunked(codings) else declared_length(lengths) or 0
    return ParsedRequest(method, target, version, tuple(fields), length)


def parse_head(head: bytes) -> RequestHead:
    """One request head, its field names lower-cased (the proxy's view)."""
    parsed = parse_request(head)
    headers = tuple((name.lower(), value) for name, value in parsed.fields)
    return RequestHead(parsed.method, parsed.target, parsed.version, headers, parsed.content_length)


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    if not line:
        raise HeadError(400, "an empty line where the request line belongs")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HeadError(400, "the request line is METHOD SP TARGET SP VERSION, single spaces")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HeadError(400, "the request line's method is not a token")
    if not _TARGET.fullmatch(target):
        raise HeadError(400, "the request line's target holds a control byte, a space or a non-ASCII byte")
    if not _VERSION.fullmatch(version):
        if _ANY_VERSION.fullmatch(version):
            raise HeadError(505, "the egress point speaks HTTP/1.0 and HTTP/1.1")
        raise HeadError(400, "the request line does not end with HTTP/1.x")
    return method, target, version
