"""Content-addressed pieces of workspace files, each its own object in the snapshot store.

A piece is at most ``PIECE_SIZE`` bytes of one file, stored zstd-compressed under
``pieces/<aa>/<sha256>-<born ms>-<nonce>``: the sha256 of its plaintext, when the writer stored it (its
own clock, milliseconds since the epoch) and a random nonce. The nonce makes every upload a key of its
own, so no writer ever overwrites or "reuses because it exists" an object that a concurrent collection
may be deleting (S3 has no transactions to prevent that); the birth time lets the collection spare young
pieces without trusting the store's timestamps (docs/checkpoints.md, "Why collection is safe").

Every piece read is verified: its plaintext must hash to the sha256 its name claims and have the size
the manifest records; anything else raises SnapshotCorrupt naming the piece, before a byte of it is used.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import zstandard

from sandbox_lifecycle.core.errors import ProviderLost, SnapshotCorrupt
from sandbox_lifecycle.core.ports import SnapshotStore

__all__ = [
    "KILL_AT_STEP_ENV",
    "PIECE_PREFIX",
    "PIECE_SIZE",
    "PieceCache",
    "PieceStore",
    "Steps",
    "born_ms",
    "piece_name",
    "valid_piece_name",
]

# 1 MiB: a turn that rewrites 1 MB of a big file stores one or two new pieces, not a whole file; larger
# pieces would cut the object count but multiply what a small edit costs in storage.
PIECE_SIZE = 1 << 20
PIECE_PREFIX = "pieces/"
_LEVEL = 3
# zstd's worst case for 1 MiB of incompressible data is a few hundred bytes over; a bigger object is
# not a piece we wrote.
_MAX_STORED = PIECE_SIZE + (PIECE_SIZE >> 7) + 4096
_NAME = re.compile(r"([0-9a-f]{64})-([0-9]{1,15})-([0-9a-f]{16})")
# Test hook: a process SIGKILLs itself at the N-th step of a suspend or a collection (tests kill -9 a
# writer or a collector between any two store operations). Unset in production.
KILL_AT_STEP_ENV = "SANDBOX_TEST_KILL_AT_STEP"


class Steps:
    """Counts the store operations of one suspend or collection; calls ``hook`` (tests interleave a
    collection there) and dies at the step ``SANDBOX_TEST_KILL_AT_STEP`` names."""

    def __init__(self, hook: Callable[[str], None] | None = None) -> None:
        self.count = 0
        self._hook = hook
        raw = os.environ.get(KILL_AT_STEP_ENV, "")
        self._kill_at = int(raw) if raw.isdigit() else None

    def __call__(self, what: str) -> None:
        self.count += 1
        if self._kill_at is not None and self.count == self._kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._hook is not None:
            self._hook(what)


def piece_name(sha256: str, born: int, nonce: str | None = None) -> str:
    return f"{sha256}-{born}-{nonce or secrets.token_hex(8)}"


def valid_piece_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def born_ms(name: str) -> int:
    """When the writer stored the piece (its clock, ms since the epoch)."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not a piece name: {name!r}")
    return int(match.group(2))


def piece_key(name: str) -> str:
    return f"{PIECE_PREFIX}{name[:2]}/{name}"


def name_of_key(key: str) -> str | None:
    """The piece name a store key holds, or None for anything else under the prefix."""
    name = key.rsplit("/", 1)[-1]
    return name if valid_piece_name(name) and key == piece_key(name) else None


class PieceCache(Protocol):
    """Where pieces are kept on this host, as stored (cache.py); the store is asked only for what it does
    not hold. ``get`` returns the verified plaintext, or None (absent, or failed verification)."""

    def get(self, name: str, size: int) -> bytes | None: ...

    def put(self, name: str, packed: bytes) -> None: ...


@dataclass
class _Nothing:
    def get(self, name: str, size: int) -> bytes | None:
        return None

    def put(self, name: str, packed: bytes) -> None:
        return None


NO_CACHE: PieceCache = _Nothing()


class PieceStore:
    """Puts and gets pieces in a SnapshotStore. ``clock`` (seconds since the epoch) stamps new pieces."""

    def __init__(
        self,
        store: SnapshotStore,
        *,
        clock: Callable[[], float] = time.time,
        cache: PieceCache = NO_CACHE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache = cache

    def put(self, sha256: str, data: bytes) -> tuple[str, int]:
        """Store ``data`` (whose sha256 the caller computed) under a key of its own; returns the piece's
        name and the bytes stored."""
        name = piece_name(sha256, int(self.clock() * 1000))
        packed = zstandard.ZstdCompressor(level=_LEVEL).compress(data)
        # BytesIO shares the bytes until written to: no copy.
        info = self.store.put(piece_key(name), io.BytesIO(packed))
        if info.bytes is not None and info.bytes != len(packed):
            raise SnapshotCorrupt(piece_key(name), f"stored {info.bytes} bytes of {len(packed)}")
        self.cache.put(name, packed)
        return name, len(packed)

    def get(self, name: str, size: int) -> bytes:
        """The verified plaintext of piece ``name`` (``size`` bytes): from the cache, else the store."""
        if not valid_piece_name(name) or not 0 <= size <= PIECE_SIZE:
            raise SnapshotCorrupt(name, "not a valid piece reference")
        cached = self.cache.get(name, size)
        if cached is not None:
            return cached
        key = piece_key(name)
        try:
            source = self.store.open(key)
        except ProviderLost as exc:
            raise SnapshotCorrupt(key, "the piece is missing from the snapshot store") from exc
        try:
            packed = source.read(_MAX_STORED + 1)
        finally:
            source.close()
        if len(packed) > _MAX_STORED:
            raise SnapshotCorrupt(key, "larger than any piece")
        data = verified(key, name, size, packed)
        self.cache.put(name, packed)
        return data

    def exists(self, name: str) -> bool:
        return self.store.stat(piece_key(name)) is not None


def verified(key: str, name: str, size: int, packed: bytes) -> bytes:
    """Decompress a stored piece and check it against its name and recorded size."""
    try:
        # Streamed with a bound: a tampered frame header may claim any content size, and a one-shot
        # decompress would allocate whatever it claims.
        with zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True) as reader:
            parts: list[bytes] = []
            got = 0
            while got <= size and (part := reader.read(size + 1 - got)):
                parts.append(part)
                got += len(part)
        data = b"".join(parts)
    except zstandard.ZstdError as exc:
        raise SnapshotCorrupt(key, f"not a valid compressed piece ({exc})") from exc
    if len(data) != size:
        raise SnapshotCorrupt(key, f"{len(data)} bytes, expected {size}")
    if hashlib.sha256(data).hexdigest() != name[:64]:
        raise SnapshotCorrupt(key, "content does not match its sha256")
    return data
