"""Helpers of the piece-collection tests: a store that runs a hook before each operation, small
workspaces, and the invariant every test checks (no manifest present names a missing piece)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import BinaryIO

from sandbox_lifecycle.adapters.snapshots.checkpoint import read_manifest, write_checkpoint
from sandbox_lifecycle.adapters.snapshots.collect import MANIFEST_PREFIX
from sandbox_lifecycle.adapters.snapshots.manifest import Manifest, is_manifest
from sandbox_lifecycle.adapters.snapshots.pieces import PIECE_PREFIX, PieceStore, name_of_key
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import SnapshotInfo, SnapshotStore
from tests.support.tarutil import Entry, dir_, docker_chunks, file

GRACE_S = 3600.0
SPEC = kind_spec("data-app").workspace
BASE = "snapshots/s/2.tar.zst"
NEW = "snapshots/s/4.tar.zst"
OLD = "snapshots/t/2.tar.zst"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class HookedStore:
    """Calls ``hook(n)`` before its n-th operation (n from 1), then performs it on ``inner``."""

    def __init__(self, inner: SnapshotStore, hook: Callable[[int], None]) -> None:
        self.inner = inner
        self.hook = hook
        self.ops = 0

    def _next(self) -> None:
        self.ops += 1
        self.hook(self.ops)

    def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
        self._next()
        return self.inner.put(key, stream)

    def open(self, key: str) -> BinaryIO:
        self._next()
        return self.inner.open(key)

    def stat(self, key: str) -> int | None:
        self._next()
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self._next()
        self.inner.delete(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        self._next()
        return self.inner.keys(prefix)

    def remove_stale_uploads(self, older_than: datetime, prefix: str = "") -> list[str]:
        return self.inner.remove_stale_uploads(older_than, prefix)


def workspace(tag: bytes, files: int = 4) -> list[Entry]:
    """A small workspace: one piece per file, each distinct, ``tag`` making a version's own."""
    return [dir_("app"), *(file(f"app/f{i}.txt", b"%d-%s" % (i, tag) * 50) for i in range(files))]


def manifests(store: SnapshotStore) -> dict[str, Manifest]:
    found = {}
    for key in store.keys(MANIFEST_PREFIX):
        data = read_manifest(store, key)
        if is_manifest(data):
            found[key] = Manifest.parse(data, key)
    return found


def pieces(store: SnapshotStore) -> set[str]:
    return {n for k in store.keys(PIECE_PREFIX) if (n := name_of_key(k)) is not None}


def missing(store: SnapshotStore) -> dict[str, set[str]]:
    """Every manifest present that names a piece the store lacks, with those pieces (want: none)."""
    present = pieces(store)
    return {k: gone for k, m in manifests(store).items() if (gone := m.piece_names() - present)}


def referenced(store: SnapshotStore) -> set[str]:
    return {n for m in manifests(store).values() for n in m.piece_names()}


def seeded(store: SnapshotStore, clock: Clock) -> SnapshotInfo:
    """The base checkpoint of sandbox s, and an old one of t whose retention is over; both aged past
    the grace."""
    base = write_checkpoint(docker_chunks(workspace(b"v1")), SPEC, PieceStore(store, clock=clock), BASE,
                            base_key=None, grace_s=GRACE_S)  # fmt: skip
    write_checkpoint(docker_chunks(workspace(b"old")), SPEC, PieceStore(store, clock=clock), OLD,
                     base_key=None, grace_s=GRACE_S)  # fmt: skip
    clock.now += 2 * GRACE_S
    return base.info


def changed() -> list:  # type: ignore[type-arg]
    # v2: two files as in v1 (reused from the base), two changed, one new.
    return workspace(b"v1", 2) + [
        e for e in workspace(b"v2", 5) if e.name not in {"app", "app/f0.txt", "app/f1.txt"}
    ]
