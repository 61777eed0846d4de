"""A checkpoint's manifest: the workspace's members, each regular file as the pieces that hold it.

Stored under the checkpoint's snapshot key as ``MAGIC`` followed by zstd-compressed JSON; archives of
earlier releases (a zstd frame from the first byte) are told apart by that magic. The manifest's sha256
is the checkpoint's ``SnapshotInfo.sha256``, recorded in the ``Suspended`` event, so the log's hash chain
covers the manifest and, through the sha256 in every piece's name, every byte of the workspace.

A manifest read back is untrusted input: ``Manifest.parse`` accepts only the exact shape ``encode``
writes and raises SnapshotCorrupt for anything else; what its members mean (names, links, sizes) is
judged afterwards by ``archive.check_members``, the same rules a whole archive meets.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import zstandard

from sandbox_lifecycle.adapters.snapshots.pieces import PIECE_SIZE, valid_piece_name
from sandbox_lifecycle.core.errors import SnapshotCorrupt

__all__ = ["MAGIC", "Entry", "Manifest", "is_manifest"]

MAGIC = b"SBXPIECES1\n"
_FORMAT = 1
# A manifest is a few hundred bytes per file; 256 MiB of JSON is millions of files, far past any
# workspace a disk limit allows, and the bound keeps a tampered one from exhausting memory.
_MAX_JSON = 256 << 20
_TYPES = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}
_LETTERS = {v: k for k, v in _TYPES.items()}


def is_manifest(head: bytes) -> bool:
    """Whether a stored snapshot's first bytes are a manifest's (else: a whole archive)."""
    return head.startswith(MAGIC)


@dataclass
class Entry:
    """One member: ``type`` is f (regular file), d (directory), l (symlink) or h (hardlink to an
    earlier member); ``pieces`` the (name, plaintext size) of each piece of a regular file, in order."""

    name: str
    type: str
    mode: int
    mtime: int
    size: int = 0
    link: str = ""
    uid: int = 0
    gid: int = 0
    pieces: list[tuple[str, int]] = field(default_factory=list)

    def info(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.name)
        info.type = _TYPES[self.type]
        info.mode, info.mtime, info.uid, info.gid = self.mode, self.mtime, self.uid, self.gid
        info.size = self.size if self.type == "f" else 0
        info.linkname = self.link
        return info

    @classmethod
    def of(cls, info: tarfile.TarInfo, pieces: list[tuple[str, int]]) -> Entry:
        return cls(
            name=info.name,
            type=_LETTERS[info.type],
            mode=info.mode,
            mtime=int(info.mtime),
            size=info.size if info.isreg() else 0,
            link=info.linkname,
            uid=info.uid,
            gid=info.gid,
            pieces=pieces,
        )

    def row(self) -> list[object]:
        return [self.name, self.type, self.mode, self.mtime, self.size, self.link, self.uid, self.gid,
                [[n, s] for n, s in self.pieces]]  # fmt: skip


@dataclass
class Manifest:
    entries: list[Entry]

    @property
    def workspace_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.type == "f")

    def piece_names(self) -> set[str]:
        return {name for e in self.entries for name, _ in e.pieces}

    def pieces(self) -> dict[str, int]:
        """Every piece it needs, by name, with its plaintext size."""
        return {name: size for e in self.entries for name, size in e.pieces}

    def members(self) -> Iterator[tarfile.TarInfo]:
        return (e.info() for e in self.entries)

    def encode(self) -> bytes:
        body = json.dumps(
            {"format": _FORMAT, "entries": [e.row() for e in self.entries]}, separators=(",", ":")
        )
        return MAGIC + zstandard.ZstdCompressor(level=3).compress(body.encode("utf-8", "surrogateescape"))

    @classmethod
    def parse(cls, data: bytes, key: str) -> Manifest:
        """The manifest ``data`` holds, or SnapshotCorrupt naming ``key`` and what is wrong."""

        def bad(why: str) -> SnapshotCorrupt:
            return SnapshotCorrupt(key, f"not a valid checkpoint manifest: {why}")

        if not is_manifest(data):
            raise bad("no manifest header")
        try:
            with zstandard.ZstdDecompressor().stream_reader(data[len(MAGIC) :]) as reader:
                raw = reader.read(_MAX_JSON + 1)
                while len(raw) <= _MAX_JSON and (more := reader.read(_MAX_JSON + 1 - len(raw))):
                    raw += more
        except zstandard.ZstdError as exc:
            raise bad(f"compression: {exc}") from exc
        if len(raw) > _MAX_JSON:
            raise bad("too large")
        try:
            doc = json.loads(raw.decode("utf-8", "surrogateescape"))
        except ValueError as exc:
            raise bad(f"JSON: {exc}") from exc
        if (
            not isinstance(doc, dict)
            or doc.get("format") != _FORMAT
            or not isinstance(doc.get("entries"), list)
        ):
            raise bad("unknown format")
        return cls([_entry(row, bad) for row in doc["entries"]])


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _entry(row: object, fail: Callable[[str], SnapshotCorrupt]) -> Entry:
    if not (isinstance(row, list) and len(row) == 9):
        raise fail("an entry is not a list of 9 fields")
    name, kind, mode, mtime, size, link, uid, gid, pieces = row
    if not (isinstance(name, str) and isinstance(link, str) and kind in _TYPES):
        raise fail(f"entry {name!r} has a bad name, type or link")
    if not all(_int(v) for v in (mode, mtime, size, uid, gid)):
        raise fail(f"entry {name!r} has a bad number")
    if not isinstance(pieces, list):
        raise fail(f"entry {name!r} has no piece list")
    refs: list[tuple[str, int]] = []
    for ref in pieces:
        if not (
            isinstance(ref, list)
            and len(ref) == 2
            and isinstance(ref[0], str)
            and valid_piece_name(ref[0])
            and _int(ref[1])
            and 0 < ref[1] <= PIECE_SIZE
        ):
            raise fail(f"entry {name!r} names a bad piece")
        refs.append((ref[0], ref[1]))
    if kind != "f" and (refs or size):
        raise fail(f"entry {name!r} is not a file but has content")
    if sum(s for _, s in refs) != size:
        raise fail(f"entry {name!r}: its pieces do not add up to its size")
    return Entry(name, kind, mode, mtime, size, link, uid, gid, refs)
