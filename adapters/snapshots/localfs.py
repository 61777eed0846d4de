"""Snapshots in a local directory: the embedded default when no S3 bucket is configured."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sandbox_lifecycle.core.errors import ProviderError, SnapshotNotFound
from sandbox_lifecycle.core.ports import SnapshotInfo

__all__ = ["LocalSnapshotStore"]

# In-flight puts live next to their target under this suffix; keys() never lists them and keys may
# not use it, so a half-written file can never be mistaken for a snapshot.
_PARTIAL = ".partial"


class LocalSnapshotStore:
    """A SnapshotStore over ``root_dir``; key ``snapshots/<id>/<v>.tar.zst`` is that relative path."""

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root_dir).resolve()

    def __repr__(self) -> str:
        return f"LocalSnapshotStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or "\0" in key
            or any(p in ("", ".", "..") for p in parts)
            or key.endswith(_PARTIAL)
        ):
            raise ValueError(
                f"invalid snapshot key {key!r}: use a relative path like snapshots/<id>/<v>.tar.zst"
            )
        return self.root.joinpath(*parts)

    def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
        """Write to a temp file beside the target, fsync, then rename over it: readers and crashes see
        either the old object or the whole new one, never a prefix."""
        path = self._path(key)
        # The archive module (zstandard, tarfile) and hashlib load with the first snapshot moved, not
        # with every command that builds the store.
        from sandbox_lifecycle.adapters.snapshots.archive import CHUNK, HashingReader

        reader = HashingReader(stream)
        fd, tmp = self._mkstemp(path)
        try:
            with os.fdopen(fd, "wb") as out:
                # Only our own file operations map to ProviderError; the source's errors (a broken
                # docker stream is also an OSError) reach the caller unchanged.
                while chunk := reader.read(CHUNK):
                    with self._writing(key):
                        out.write(chunk)
                with self._writing(key):
                    out.flush()
                    os.fsync(out.fileno())
            with self._writing(key):
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename is only durable once the directory entry is; without this a power cut could lose
        # a snapshot whose workspace was already destroyed.
        _fsync_dir(path.parent)
        return SnapshotInfo(key=key, sha256=reader.sha256, bytes=reader.bytes_read)

    @contextlib.contextmanager
    def _writing(self, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ProviderError(f"cannot write snapshot {key!r} under {self.root}: {exc.strerror}") from exc

    def _mkstemp(self, path: Path) -> tuple[int, str]:
        # A concurrent delete() prunes empty directories and may remove ours between mkdir and
        # mkstemp, so try again a few times rather than fail the put.
        try:
            for _ in range(3):
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    # why here: only a write needs it; reads and `ls` never do
                    import tempfile

                    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL)
        except OSError as exc:
            raise ProviderError(f"cannot create a snapshot file in {path.parent}: {exc.strerror}") from exc
        raise ProviderError(f"snapshot directory {path.parent} keeps disappearing while writing to it")

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise SnapshotNotFound(key) from None
        except OSError as exc:
            raise ProviderError(f"cannot read snapshot {key!r}: {exc.strerror}") from exc

    def stat(self, key: str) -> int | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def info(self, key: str) -> SnapshotInfo | None:
        """Size and sha256 of a stored object (read in full), for the reconciler; None when absent."""
        try:
            f = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ProviderError(f"cannot read snapshot {key!r}: {exc.strerror}") from exc
        with f:
            # why here: short commands never hash (tests/**/cli/test_imports.py)
            import hashlib

            digest = hashlib.file_digest(f, "sha256")
            size = f.tell()
        return SnapshotInfo(key=key, sha256=digest.hexdigest(), bytes=size)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()
        self._prune(path.parent)

    def _prune(self, parent: Path) -> None:
        # Drop the per-sandbox directories that emptied, so deleted sandboxes leave no trace.
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    break
                raise ProviderError(f"cannot prune snapshot directory {parent}: {exc.strerror}") from exc
            parent = parent.parent

    def remove_stale_uploads(self, older_than: datetime, prefix: str = "") -> list[str]:
        """Unlink the temp files of puts killed before ``older_than`` (by their last write): a put that
        dies leaves ``.<name>.<random>.partial`` beside its target, which nothing else ever removes."""
        cutoff = older_than.timestamp()
        removed: list[str] = []
        for dirpath, _, filenames in os.walk(self._prefix_dir(prefix)):
            for name in filenames:
                if not (name.startswith(".") and name.endswith(_PARTIAL)):
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(self.root).as_posix()
                try:
                    if not rel.startswith(prefix) or path.stat().st_mtime >= cutoff:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue  # its put finished (renamed it) or another sweep removed it
                except OSError as exc:
                    raise ProviderError(
                        f"cannot remove stale upload {rel} under {self.root}: {exc.strerror}"
                    ) from exc
                removed.append(rel)
                self._prune(path.parent)
        return sorted(removed)

    def _prefix_dir(self, prefix: str) -> Path:
        dirs = prefix.split("/")[:-1]
        if prefix.startswith("/") or ".." in dirs:
            raise ValueError(f"invalid key prefix {prefix!r}: use a relative path like snapshots/<id>/")
        return self.root.joinpath(*dirs)

    def keys(self, prefix: str = "") -> Iterator[str]:
        self._prefix_dir(prefix)  # refuses unsafe prefixes now, not on the first next()
        dirs = prefix.split("/")[:-1]
        found: list[str] = []
        # Walk only the directory the prefix pins down, not the whole store.
        for dirpath, _, filenames in os.walk(self.root.joinpath(*dirs)):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix) and not name.endswith(_PARTIAL):
                    found.append(key)
        yield from sorted(found)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
