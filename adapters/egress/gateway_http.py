"""The gateway's side of HTTP/1.1 (RFC 9112), standard library only: its requests as text, and the
asyncio readers of heads and chunked framing.

The grammar itself is ``http1``'s, the one strict parser the proxy uses too: whatever the gateway
forwards, an upstream that parses more leniently must read the same way (a bare CR inside a header value,
copied on, becomes a second ``x-api-key`` there). The gateway narrows it further: its request targets are
origin-form paths only. ``tests/**/test_gateway_properties.py`` checks against h11 that whatever
this accepts, h11 accepts too and reads the same way.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from . import http1
from .http1 import MAX_HEADERS, split_lines

# One refusal type for the proxy's and the gateway's faults: a status and a one-line message.
BadRequest = http1.HeadError

MAX_HEAD_BYTES = http1.MAX_HEAD
MAX_TRAILER_LINES = 32

# origin-form (RFC 9112 3.2.1): an absolute path of RFC 3986 pchars, an optional query; '%' only as %XX.
_TARGET = re.compile(
    rb"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(;[\x21-\x7e \t]*)?\r\n")

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "BadRequest",
    "Request",
    "content_length",
    "is_chunked",
    "parse_headers",
    "parse_request_head",
    "read_chunk_end",
    "read_chunk_size",
    "read_head",
    "read_trailers",
    "split_lines",
]


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


def parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    """``name: value`` lines as text: names as sent, values as latin-1 (every byte kept)."""
    return [(name.decode("ascii"), value.decode("latin-1")) for name, value in http1.parse_fields(lines)]


def parse_request_head(head: bytes) -> Request:
    """The request a head (through its blank line) describes, or BadRequest."""
    parsed = http1.parse_request(head)
    if not _TARGET.fullmatch(parsed.target):
        raise BadRequest(400, "the request line is not METHOD /path HTTP/1.1 (origin-form targets only)")
    headers = [(name.decode("ascii"), value.decode("latin-1")) for name, value in parsed.fields]
    request = Request(parsed.method.decode(), parsed.target.decode(), parsed.version.decode(), headers)
    request.chunked = parsed.content_length is None
    request.length = parsed.content_length or 0
    return request


def _values(headers: list[tuple[str, str]], name: str) -> list[bytes]:
    return [v.encode("latin-1") for k, v in headers if k.lower() == name]


def content_length(headers: list[tuple[str, str]]) -> int | None:
    """An answer's ``Content-Length``, None when it has none (``http1.declared_length``)."""
    return http1.declared_length(_values(headers, "content-length"))


def is_chunked(headers: list[tuple[str, str]]) -> bool:
    """Whether an answer is chunked, the one transfer coding accepted (``http1.is_chunked``)."""
    return http1.is_chunked(_values(headers, "transfer-encoding"))


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
