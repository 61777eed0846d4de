"""Strict HTTP/1.1 message heads and chunked framing for the gateway (RFC 9112), standard library only.

The gateway forwards what a sandbox sends to an upstream that may parse more leniently than we do: a
bare CR inside a header value, which we would copy, becomes a line break there (a second ``x-api-key``
next to the real one). So anything a strict parser would not accept is refused here, never repaired:
lines end in CRLF only, names are tokens, values hold no control character, no obsolete line folding,
exactly one ``Host``, one whole-number ``Content-Length`` or ``Transfer-Encoding: chunked`` and never
both. ``tests/gateway/test_gateway_properties.py`` checks against h11 that whatever this accepts, h11
accepts too and reads the same way.

The proxy has its own head parser (``http1``) and pumps (``relay``): two strict readers of one grammar,
kept apart this round because they were written side by side; one of them should go (a known debt).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_TRAILER_LINES = 32

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# A field value: visible characters and obs-text, single spaces or tabs only between them (RFC 9110 5.5).
_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*|")
# origin-form (RFC 9112 3.2.1): an absolute path of RFC 3986 pchars, an optional query; '%' only as %XX.
_TARGET = re.compile(
    rb"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(;[\x21-\x7e \t]*)?\r\n")


class BadRequest(Exception):
    """A request (or an upstream's answer) that is refused with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    # Body framing, from the head: a length (0 when there is none) or chunked.
    length: int = 0
    chunked: bool = False
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def wants_close(self) -> bool:
        connection = (self.header("connection") or "").lower()
        return self.version == "HTTP/1.0" or "close" in connection

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


def split_lines(head: bytes) -> list[bytes]:
    """The lines of a head ending in CRLF CRLF; a CR or LF anywhere but in a CRLF is refused."""
    if head.find(b"\r\n\r\n") != len(head) - 4:
        raise BadRequest(400, "the message head does not end with its first empty line")
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise BadRequest(400, "a bare CR or LF in the message head (lines end in CRLF only)")
    return lines


def parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    """``name: value`` lines: a token name, no space before the colon, a value without controls."""
    if len(lines) > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header lines")
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        value = value.strip(b" \t")
        if not sep or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            # A leading space or tab (obsolete line folding) fails the token check too.
            raise BadRequest(400, "a header line is malformed")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return headers


def parse_request_head(head: bytes) -> Request:
    """The request a head (through its blank line) describes, or BadRequest."""
    lines = split_lines(head)
    parts = lines[0].split(b" ")
    if (
        len(parts) != 3
        or not _TOKEN.fullmatch(parts[0])
        or not _TARGET.fullmatch(parts[1])
        or parts[2] not in _VERSIONS
    ):
        raise BadRequest(400, "the request line is not METHOD /path HTTP/1.1")
    headers = parse_headers(lines[1:])
    request = Request(parts[0].decode(), parts[1].decode(), parts[2].decode(), headers)
    hosts = [v for k, v in headers if k.lower() == "host"]
    if len(hosts) > 1 or (not hosts and request.version == "HTTP/1.1"):
        raise BadRequest(400, "an HTTP/1.1 request carries exactly one Host header")
    request.chunked = is_chunked(headers)
    length = content_length(headers)
    if request.chunked and length is not None:
        raise BadRequest(400, "a request may not carry both Content-Length and Transfer-Encoding")
    if request.chunked and request.version == "HTTP/1.0":
        raise BadRequest(400, "HTTP/1.0 has no Transfer-Encoding")
    request.length = length or 0
    return request


def content_length(headers: list[tuple[str, str]]) -> int | None:
    values = [v for k, v in headers if k.lower() == "content-length"]
    if not values:
        return None
    if len(values) != 1 or not re.fullmatch(r"[0-9]{1,18}", values[0]):
        raise BadRequest(400, "Content-Length is not one whole number")
    return int(values[0])


def is_chunked(headers: list[tuple[str, str]]) -> bool:
    codings = [
        c.strip().lower() for k, v in headers if k.lower() == "transfer-encoding" for c in v.split(",")
    ]
    if not codings:
        return False
    if codings != ["chunked"]:
        raise BadRequest(501, "only the chunked transfer coding is supported")
    return True


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """A message head through its blank line, or None on a clean end of stream before any byte."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise BadRequest(400, "the request head ended early") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes") from None


async def read_chunk_size(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The size of the next chunk and its size line as read (hex, optional extension, CRLF)."""
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "a chunk size line is too long") from None
    found = _CHUNK_LINE.fullmatch(line)
    if found is None:
        raise BadRequest(400, "a chunk size is malformed")
    return int(found.group(1), 16), line


async def read_chunk_end(reader: asyncio.StreamReader) -> bytes:
    """The CRLF that ends a chunk's data: anything else is a framing error."""
    end = await reader.readexactly(2)
    if end != b"\r\n":
        raise BadRequest(400, "a chunk does not end in CRLF")
    return end


async def read_trailers(reader: asyncio.StreamReader) -> list[bytes]:
    """The trailer lines after the last chunk, through the empty line (each a strict header line)."""
    lines = []
    for _ in range(MAX_TRAILER_LINES + 1):
        line = await reader.readuntil(b"\r\n")
        lines.append(line)
        if line == b"\r\n":
            parse_headers([t[:-2] for t in lines[:-1]])
            return lines
    raise BadRequest(400, "too many trailer lines")
