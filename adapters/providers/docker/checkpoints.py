"""The Docker provider's checkpoints of pieces: its piece store and cache, how a stored snapshot is
restored (a manifest of pieces, or a whole archive of an earlier release), forks, and the collection the
sweep runs. See docs/checkpoints.md.

Which checkpoint a container's workspace came from (its *base*, whose pieces its next suspend may reuse)
is a label of the container, set when a resume creates it: any process of the deployment that suspends
it later finds it there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox_lifecycle.adapters.providers.docker.settings import PieceSettings
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.ports import SnapshotInfo, SnapshotStore, WorkspaceSpec

if TYPE_CHECKING:
    from sandbox_lifecycle.adapters.snapshots.pieces import PieceStore

log = logging.getLogger("sandbox_lifecycle")

LABEL_BASE = "sandbox-lifecycle.base"
PIECES = "pieces/"  # as pieces.PIECE_PREFIX, which loads zstandard
# Tar chunks of a restore; called again for a second try, each call validating first.
Restore = Callable[[], Iterator[bytes]]


def default_cache_dir(deployment: str) -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "sandbox-lifecycle" / "pieces" / deployment


class DockerCheckpoints:
    def __init__(self, store: SnapshotStore, settings: PieceSettings, deployment: str) -> None:
        self.store = store
        self.settings = settings
        self.grace_s = settings.grace_ms / 1000
        self._cache_dir = settings.cache_dir or default_cache_dir(deployment)
        self._pieces: PieceStore | None = None
        self._lock = threading.Lock()
        self._collected_at: float | None = None

    @property
    def pieces(self) -> PieceStore:
        """Built on first use: the modules behind it (zstandard) are for suspends and resumes only."""
        with self._lock:
            if self._pieces is None:
                # why: zstandard and the cache load with the first suspend or resume, not with an exec
                from sandbox_lifecycle.adapters.snapshots.cache import DiskPieceCache
                from sandbox_lifecycle.adapters.snapshots.pieces import NO_CACHE, PieceStore

                mb = self.settings.cache_mb
                cache = DiskPieceCache(self._cache_dir, mb * 1024**2) if mb else NO_CACHE
                self._pieces = PieceStore(self.store, cache=cache)
            return self._pieces

    @staticmethod
    def base_of(container: dict[str, Any] | None) -> str | None:
        labels = ((container or {}).get("Config") or {}).get("Labels") or {}
        base = labels.get(LABEL_BASE)
        return base if isinstance(base, str) and base else None

    @contextmanager
    def restorer(
        self,
        snapshot: SnapshotInfo,
        spec: WorkspaceSpec,
        *,
        max_bytes: int | None,
        owner: tuple[int, int],
    ) -> Iterator[Restore]:
        """A verified snapshot, as a function giving its tar chunks. A manifest's pieces are fetched into
        the cache first when they fit, so a missing or corrupt one fails before a container exists."""
        # why: archive and checkpoint (zstandard, tarfile) cost every exec ~18 ms (measured)
        from sandbox_lifecycle.adapters.snapshots.archive import fetch_verified, restore_stream
        from sandbox_lifecycle.adapters.snapshots.checkpoint import prefetch, restore_checkpoint
        from sandbox_lifecycle.adapters.snapshots.manifest import MAGIC, Manifest, is_manifest

        with fetch_verified(self.store, snapshot) as stored:
            head = stored.read(len(MAGIC))
            stored.seek(0)
            if is_manifest(head):
                manifest = Manifest.parse(stored.read(), snapshot.key)
                pieces = self.pieces
                if self.settings.cache_mb * 1024**2 >= manifest.workspace_bytes:
                    prefetch(manifest, pieces)

                def from_pieces() -> Iterator[bytes]:
                    return restore_checkpoint(manifest, pieces, spec, max_bytes=max_bytes, owner=owner)

                yield from_pieces
                return

            def from_archive() -> Iterator[bytes]:
                stored.seek(0)
                return restore_stream(stored, spec, max_bytes=max_bytes, owner=owner)

            yield from_archive

    def workspace_bytes(self, key: str) -> int | None:
        """The workspace size a stored manifest records; None for a whole archive."""
        # why: as in restorer
        from sandbox_lifecycle.adapters.snapshots.checkpoint import read_manifest
        from sandbox_lifecycle.adapters.snapshots.manifest import MAGIC, Manifest, is_manifest

        source = self.store.open(key)
        try:
            head = source.read(len(MAGIC))
        finally:
            source.close()
        if not is_manifest(head):
            return None
        return Manifest.parse(read_manifest(self.store, key), key).workspace_bytes

    def copy(self, snapshot: SnapshotInfo, key: str) -> SnapshotInfo:
        """A fork's snapshot: a manifest is stored again (no piece copied); a whole archive of an earlier
        release is copied whole, as before."""
        # why: as in restorer
        from sandbox_lifecycle.adapters.snapshots.archive import fetch_verified
        from sandbox_lifecycle.adapters.snapshots.checkpoint import copy_checkpoint
        from sandbox_lifecycle.adapters.snapshots.manifest import MAGIC, is_manifest

        with fetch_verified(self.store, snapshot) as stored:
            head = stored.read(len(MAGIC))
            stored.seek(0)
            if is_manifest(head):
                return copy_checkpoint(self.store, snapshot, stored.read(), key)
            info = self.store.put(key, stored)
        if snapshot.sha256 is not None and info.sha256 != snapshot.sha256:
            self.store.delete(key)
            raise ProviderError(f"the copy of snapshot {snapshot.key!r} at {key!r} did not verify; retry")
        return info

    def collect(self, older_than: datetime) -> list[str]:
        """Pieces no manifest names and older than the grace deleted, and what killed piece uploads left
        (begun before ``older_than``) removed; at most every quarter grace per process (a pass lists
        every piece and reads every manifest of the deployment)."""
        now = time.monotonic()
        if self._collected_at is not None and now - self._collected_at < self.grace_s / 4:
            return []
        self._collected_at = now
        # why: as in restorer
        from sandbox_lifecycle.adapters.snapshots.collect import collect_pieces

        # An aborted pass (a manifest deleted while it read, or unreadable) is logged by collect_pieces
        # and deletes nothing; the next pass tries again.
        stale = self.store.remove_stale_uploads(older_than, PIECES)
        done = collect_pieces(self.store, grace_s=self.grace_s)
        return stale + [f"{key} (a piece no checkpoint names)" for key in done.deleted]
