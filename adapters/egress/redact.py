"""Redaction of credential values from an answer relayed to a sandbox, shared by the proxy (credentials
it adds, inject.py) and the gateway (the git credential it adds, gateway.py).

Every value, and each of its words of :data:`MIN_WORD` characters or more (the token after ``Bearer`` or
``Basic``), is replaced by as many ``*``: the length of what is relayed never changes, so a
``Content-Length`` stays true. A stream cut anywhere is redacted with a carry-over window of the longest
secret's length: memory stays bounded whatever the answer's size.

:func:`check_answer` tells an answer the redaction can read (in clear, whole) from one it cannot.

Standard library only (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

# A word of a value this long or longer is redacted on its own too (``Bearer <token>``: the token).
MIN_WORD = 8
# Transfer codings of an answer read here; any other (gzip, ...) hides an echo from the redaction.
READABLE_CODINGS = frozenset({b"", b"identity", b"chunked"})


def secrets_of(values: Sequence[str]) -> list[bytes]:
    """The byte strings to redact for ``values``, longest first (a longer one wins over its parts)."""
    found = {v.encode() for v in values if v}
    found |= {w.encode() for v in values for w in v.split() if len(w) >= MIN_WORD}
    return sorted(found, key=len, reverse=True)


def redact(data: bytes, secrets: Sequence[bytes]) -> bytes:
    """``data`` with every secret starred, for a piece seen whole (an answer's head)."""
    for secret in secrets:
        data = data.replace(secret, b"*" * len(secret))
    return data


class Redactor:
    """Replaces secrets in a byte stream cut anywhere, keeping back only what could begin one."""

    def __init__(self, values: Sequence[str]) -> None:
        self.secrets = secrets_of(values)
        self._keep = max((len(s) for s in self.secrets), default=1) - 1
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        buffer = redact(self._pending + data, self.secrets)
        cut = max(0, len(buffer) - self._keep)
        self._pending = buffer[cut:]
        return buffer[:cut]

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest


class AnswerRefused(Exception):
    """The upstream's answer cannot be redacted (compressed, a byte range, a malformed head); nothing
    of it was relayed. The message says why, for the sandbox's 502."""


def _fields(head: bytes) -> dict[bytes, bytes]:
    """An answer head's fields, names in lower case, repeated ones joined by ``,``."""
    found: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            key = name.strip().lower()
            found[key] = (found[key] + b"," if key in found else b"") + value.strip()
    return found


def _codings(value: bytes) -> list[bytes]:
    return [c.strip().lower() for c in value.split(b",")]


def check_answer(head: bytes) -> bool:
    """Whether the answer whose ``head`` this is (status line and fields, without the blank line) is
    chunked; AnswerRefused for one the redaction cannot read: a 206 (a slice of an echo), a content
    coding other than identity, a transfer coding other than chunked."""
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise AnswerRefused("the upstream's status line is malformed")
    if status[1] == b"206":
        raise AnswerRefused("the upstream answered with a byte range (206), which is never relayed")
    fields = _fields(head)
    content = [c for c in _codings(fields.get(b"content-encoding", b"")) if c not in (b"", b"identity")]
    if content:
        coding = b", ".join(content).decode("latin-1")
        raise AnswerRefused(f"the upstream answered with Content-Encoding {coding}, which is never relayed")
    transfer = _codings(fields.get(b"transfer-encoding", b""))
    if any(c not in READABLE_CODINGS for c in transfer):
        raise AnswerRefused("the upstream answered with a transfer coding other than chunked")
    return transfer[-1] == b"chunked"
