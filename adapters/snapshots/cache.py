"""A bounded host-side cache of pieces (``SANDBOX_SNAPSHOT_CACHE_MB``), least recently used out first.

Pieces are kept as stored (compressed) under ``<dir>/<aa>/<piece name>``; a suspend puts what it uploads
and a resume what it downloads, so resuming on the host that suspended fetches nothing. A piece read
from the cache is verified like one from the store (a damaged file is dropped and the store asked
instead): the cache is a speed-up, never a source of truth.

Several processes of one host may share the directory: files are written beside their place and
renamed into it, so a reader sees a whole piece or none; eviction counts what this process knows and
rescans the directory when it would evict, so a neighbour's files are counted too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from sandbox_lifecycle.adapters.snapshots.pieces import valid_piece_name, verified
from sandbox_lifecycle.core.errors import SnapshotCorrupt

__all__ = ["DiskPieceCache"]

log = logging.getLogger(__name__)


class DiskPieceCache:
    """``limit_bytes`` bounds the compressed bytes kept; recency is the file's mtime, touched on a hit."""

    def __init__(self, directory: str | os.PathLike[str], limit_bytes: int) -> None:
        if limit_bytes <= 0:
            raise ValueError("a cache needs a positive limit (0 means no cache: do not build one)")
        self.dir = Path(directory)
        self.limit = limit_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # counted on first use

    def _path(self, name: str) -> Path:
        if not valid_piece_name(name):
            raise ValueError(f"not a piece name: {name!r}")
        return self.dir / name[:2] / name

    def get(self, name: str, size: int) -> bytes | None:
        path = self._path(name)
        try:
            packed = path.read_bytes()
        except OSError:
            return None
        try:
            data = verified(str(path), name, size, packed)
        except SnapshotCorrupt as exc:
            log.warning("dropping a damaged cached piece: %s", exc)
            self._drop(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return data

    def put(self, name: str, packed: bytes) -> None:
        if len(packed) > self.limit:
            return
        path = self._path(name)
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".partial")
            with os.fdopen(fd, "wb") as out:
                out.write(packed)
            os.replace(tmp, path)
        except OSError as exc:
            # A full or read-only cache disk costs speed, not the suspend or resume.
            log.warning("cannot cache piece %s: %s", name, exc)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
            return
        with self._lock:
            if self._total is None:
                self._total = self._scan_total()
            else:
                self._total += len(packed)
            if self._total > self.limit:
                self._evict()

    def _scan(self) -> list[tuple[float, int, Path]]:
        found: list[tuple[float, int, Path]] = []
        for sub in self.dir.glob("??"):
            for path in sub.iterdir():
                if not valid_piece_name(path.name):
                    continue
                with contextlib.suppress(OSError):
                    st = path.stat()
                    found.append((st.st_mtime, st.st_size, path))
        return found

    def _scan_total(self) -> int:
        return sum(size for _, size, _ in self._scan())

    def _evict(self) -> None:
        """Down to 90 % of the limit, oldest first, so a full cache does not rescan on every put."""
        files = sorted(self._scan())
        total = sum(size for _, size, _ in files)
        target = self.limit * 9 // 10
        for _, size, path in files:
            if total <= target:
                break
            self._drop(path)
            total -= size
        self._total = total

    @staticmethod
    def _drop(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
