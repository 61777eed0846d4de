"""Collect pieces no checkpoint needs: the sweep's half of content-addressed snapshots.

One pass, in this order (the order is the safety argument, docs/checkpoints.md):

1. list the pieces, keeping as candidates those born more than ``grace`` ago (the birth time is in the
   piece's name, stamped by its writer);
2. list the manifests and read every one, dropping each piece it names from the candidates; a manifest
   listed but gone when read (retention deleted it meanwhile) or unreadable aborts the pass, since the
   pieces it named can no longer be known;
3. delete the candidates left.

A writer reuses only pieces its base manifest names (which core keeps until the writer's next manifest
exists) and stores a manifest only within ``grace / 2`` of starting; a fork checks that its source still
exists after storing its copy. So a piece a manifest needs is either named by a manifest present during
step 2, or too young to be a candidate in step 1. Any process may run this at any time, several at once,
and a kill at any point leaves at worst pieces that the next pass collects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sandbox_lifecycle.adapters.snapshots.checkpoint import read_manifest
from sandbox_lifecycle.adapters.snapshots.manifest import MAGIC, Manifest, is_manifest
from sandbox_lifecycle.adapters.snapshots.pieces import PIECE_PREFIX, Steps, born_ms, name_of_key, piece_key
from sandbox_lifecycle.core.errors import SnapshotCorrupt, SnapshotNotFound
from sandbox_lifecycle.core.ports import SnapshotStore

__all__ = ["MANIFEST_PREFIX", "Collection", "collect_pieces"]

log = logging.getLogger(__name__)

MANIFEST_PREFIX = "snapshots/"
_READERS = 16


@dataclass
class Collection:
    """What one pass saw and did. ``aborted``: why it deleted nothing (None when it ran through)."""

    pieces: int = 0
    manifests: int = 0
    deleted: list[str] = field(default_factory=list)
    aborted: str | None = None


def collect_pieces(
    store: SnapshotStore,
    *,
    grace_s: float,
    clock: Callable[[], float] = time.time,
    steps: Steps | None = None,
) -> Collection:
    step = steps or Steps()
    report = Collection()
    step("list pieces")
    cutoff_ms = int((clock() - grace_s) * 1000)
    candidates: set[str] = set()
    for key in store.keys(PIECE_PREFIX):
        name = name_of_key(key)
        if name is None:
            continue
        report.pieces += 1
        if born_ms(name) < cutoff_ms:
            candidates.add(name)
    step("list manifests")
    keys = list(store.keys(MANIFEST_PREFIX))
    report.manifests = len(keys)
    with ThreadPoolExecutor(_READERS, thread_name_prefix="collect") as pool:
        for key, named in zip(keys, pool.map(lambda k: _named(store, k), keys), strict=True):
            if isinstance(named, str):
                report.aborted = f"manifest {key}: {named}"
                log.warning("piece collection deleted nothing: %s", report.aborted)
                return report
            candidates.difference_update(named)
    for name in sorted(candidates):
        step("piece delete")
        store.delete(piece_key(name))
        report.deleted.append(piece_key(name))
    return report


def _named(store: SnapshotStore, key: str) -> set[str] | str:
    """The pieces the snapshot under ``key`` names (none: an archive of an earlier release), or why it
    cannot be known."""
    try:
        head = store.open(key)
        try:
            start = head.read(len(MAGIC))
        finally:
            head.close()
        if not is_manifest(start):
            return set()
        return Manifest.parse(read_manifest(store, key), key).piece_names()
    except SnapshotNotFound:
        return "deleted while the collection read it"
    except SnapshotCorrupt as exc:
        return str(exc)
