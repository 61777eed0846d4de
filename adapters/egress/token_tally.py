"""The tokens a model answer reports, read from its body as the gateway relays it.

An Anthropic Messages answer says what it used: a JSON answer in its ``usage`` object, a streamed one
(server-sent events) in ``message_start`` (``message.usage``: the input tokens) and ``message_delta``
(``usage``: the output tokens so far; the last one is the total). The tally sees the body piece by piece
as it goes to the sandbox and never delays or changes it; it holds at most ``MAX_HELD`` bytes (a JSON
answer until it ends, one event line of a stream), and gives up (None) on anything it cannot read: a
body larger than that, an encoding it does not know, an answer without usage.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

MAX_HELD = 1024 * 1024
# zlib's window bits that accept a gzip or a zlib header alike; a raw deflate stream uses -15.
_GZIP_OR_ZLIB = 32 + 15


class TokenTally:
    """Feed it the answer's body pieces (after transfer framing), then read :meth:`tokens`."""

    def __init__(self, content_type: str | None, content_encoding: str | None) -> None:
        self._stream = (content_type or "").split(";", 1)[0].strip().lower() == "text/event-stream"
        encoding = (content_encoding or "identity").strip().lower()
        self._inflate: Any = None
        self._broken = False
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(_GZIP_OR_ZLIB)
        elif encoding != "identity":
            self._broken = True  # br, zstd...: not read
        self._held = bytearray()
        self._input: int | None = None
        self._output: int | None = None

    def feed(self, piece: bytes) -> None:
        if self._broken:
            return
        if self._inflate is not None:
            try:
                piece = self._inflate.decompress(piece, MAX_HELD + 1 - len(self._held))
            except zlib.error:
                self._give_up()
                return
        if self._stream:
            self._feed_events(piece)
        else:
            self._held += piece
            if len(self._held) > MAX_HELD:
                self._give_up()

    def tokens(self) -> tuple[int, int] | None:
        """(input, output) tokens the answer reported, or None when it reported none that could be read."""
        if self._broken:
            return None
        if not self._stream:
            try:
                usage = json.loads(bytes(self._held)).get("usage")
            except (ValueError, AttributeError):
                return None
            self._take(usage)
        if self._input is None and self._output is None:
            return None
        return (self._input or 0, self._output or 0)

    def _give_up(self) -> None:
        self._broken = True
        self._held = bytearray()

    def _feed_events(self, piece: bytes) -> None:
        self._held += piece
        while (end := self._held.find(b"\n")) >= 0:
            line = bytes(self._held[:end]).rstrip(b"\r")
            del self._held[: end + 1]
            # Only the few events that carry usage are parsed, not every text delta of a long answer.
            if line.startswith(b"data:") and b'"usage"' in line:
                self._event(line[5:])
        if len(self._held) > MAX_HELD:
            self._give_up()

    def _event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        message = event.get("message")
        if isinstance(message, dict):
            self._take(message.get("usage"))
        self._take(event.get("usage"))

    def _take(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        found_in, found_out = usage.get("input_tokens"), usage.get("output_tokens")
        if _count(found_in):
            self._input = found_in
        if _count(found_out):
            self._output = found_out


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
