"""Write, restore and copy a checkpoint made of a manifest and content-addressed pieces.

Write (a suspend): the workspace's tar stream (``archive.filtered_tar``: the same members a whole archive
kept) is cut into pieces of ``PIECE_SIZE`` per file; a piece whose sha256 the *base* manifest names (the
checkpoint this workspace was restored from, or last stored) is referenced as it is, any other is
uploaded under a key of its own; then the manifest is stored under the checkpoint's key. Reusing only
what the base names, and never a piece found merely by listing the store, is what keeps a concurrent
collection from deleting a piece between our decision and our manifest (docs/checkpoints.md).

Restore (a resume): the manifest's members go through ``archive.check_members`` (every rule a whole
archive meets) before a piece is fetched, then ``archive.reserialize_members`` writes the canonical tar,
each piece verified by its hash on the way in.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sandbox_lifecycle.adapters.snapshots.archive import (
    check_members,
    coalesce,
    filtered_members,
    reserialize_members,
)
from sandbox_lifecycle.adapters.snapshots.manifest import Entry, Manifest, is_manifest
from sandbox_lifecycle.adapters.snapshots.pieces import PIECE_SIZE, PieceStore, Steps
from sandbox_lifecycle.core.errors import ProviderError, SnapshotCorrupt, SnapshotNotFound
from sandbox_lifecycle.core.ports import SnapshotInfo, SnapshotStore, WorkspaceSpec

__all__ = [
    "SuspendTooSlow",
    "Written",
    "copy_checkpoint",
    "read_manifest",
    "restore_checkpoint",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

# Pieces compressed and uploaded at once: zstd and the store's I/O release the GIL, and S3 wants
# parallel requests. The window bounds memory at about twice this many pieces.
WORKERS = 8
_WINDOW = 2 * WORKERS
# A manifest is read whole; far more than any manifest of a workspace a disk limit allows.
_MAX_MANIFEST = 512 << 20


class SuspendTooSlow(ProviderError):
    """The suspend ran past half the piece grace period: its new pieces could be collected before its
    manifest names them, so it stores no manifest (the container is kept; retry)."""


@dataclass(frozen=True)
class Written:
    info: SnapshotInfo
    workspace_bytes: int
    bytes_new: int


def read_manifest(store: SnapshotStore, key: str) -> bytes:
    """The stored object under ``key`` whole (bounded); SnapshotNotFound when absent."""
    source = store.open(key)
    try:
        data = source.read(_MAX_MANIFEST + 1)
    finally:
        source.close()
    if len(data) > _MAX_MANIFEST:
        raise SnapshotCorrupt(key, "larger than any manifest")
    return data


def base_pieces(store: SnapshotStore, base_key: str | None) -> dict[str, str]:
    """sha256 -> piece name of every piece the base manifest names; empty when there is no usable base
    (none, an archive of an earlier release, gone, or unreadable): every piece is then uploaded anew."""
    if base_key is None:
        return {}
    try:
        data = read_manifest(store, base_key)
        if not is_manifest(data):
            return {}
        names = Manifest.parse(data, base_key).piece_names()
    except (SnapshotNotFound, SnapshotCorrupt) as exc:
        log.warning("checkpoint base %s is not usable, storing every piece anew: %s", base_key, exc)
        return {}
    return {name[:64]: name for name in names}


def write_checkpoint(
    tar_chunks: Iterable[bytes],
    spec: WorkspaceSpec,
    pieces: PieceStore,
    key: str,
    *,
    base_key: str | None,
    grace_s: float,
    steps: Steps | None = None,
) -> Written:
    """Store the workspace docker's ``get_archive`` stream holds as a checkpoint under ``key``.

    Raises SuspendTooSlow, before the manifest, when it took longer than ``grace_s / 2`` on
    ``pieces.clock``; any failure leaves no manifest (new pieces it uploaded are collected later).
    """
    step = steps or Steps()
    store, clock = pieces.store, pieces.clock
    started = clock()
    known = base_pieces(store, base_key)
    step("base read")
    # Pieces this suspend uploaded, by sha256: a second copy of new content within one workspace is
    # referenced, not stored again (two copies hashed at the same moment may both be: harmless).
    mine: dict[str, str] = {}
    uploaded: list[int] = []
    # Each member with the pieces of its content, named once their futures resolve.
    members: list[tuple[tarfile.TarInfo, list[tuple[Future[str], int]]]] = []
    window: deque[Future[str]] = deque()

    def piece_of(chunk: bytes) -> str:
        # On a worker: hashing (which releases the GIL) runs on every core, not the reader's alone.
        sha = hashlib.sha256(chunk).hexdigest()
        name = known.get(sha) or mine.get(sha)
        if name is None:
            step("piece put")
            name, stored = pieces.put(sha, chunk)
            mine[sha] = name
            uploaded.append(stored)
        return name

    with ThreadPoolExecutor(WORKERS, thread_name_prefix="pieces") as pool:
        for member, data in filtered_members(tar_chunks, spec):
            refs: list[tuple[Future[str], int]] = []
            for chunk in _rechunked(data, PIECE_SIZE):
                future = pool.submit(piece_of, chunk)
                refs.append((future, len(chunk)))
                window.append(future)
                while len(window) > _WINDOW:
                    window.popleft().result()
            members.append((member, refs))
    manifest = Manifest([Entry.of(m, [(f.result(), size) for f, size in refs]) for m, refs in members])
    elapsed = clock() - started
    if elapsed > grace_s / 2:
        raise SuspendTooSlow(
            f"storing checkpoint {key!r} took {elapsed:.0f} s, past half the piece grace period "
            f"({grace_s:.0f} s): its new pieces could be collected before the manifest names them; "
            "nothing was recorded, retry the suspend"
        )
    encoded = manifest.encode()
    step("manifest put")
    info = store.put(key, io.BytesIO(encoded))
    if store.stat(key) != len(encoded):
        raise ProviderError(f"checkpoint manifest {key!r} did not verify after storing; retry the suspend")
    if base_key is not None and known:
        step("base check")
        if store.stat(base_key) is None:
            # The base went while we relied on it, so a collection may have taken pieces we reused.
            # Only a bug (core keeps the base of a running sandbox) gets here; refuse rather than risk it.
            store.delete(key)
            raise ProviderError(
                f"checkpoint base {base_key!r} was deleted during the suspend; nothing was recorded, retry"
            )
    return Written(info, manifest.workspace_bytes, sum(uploaded))


def _rechunked(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``chunks`` regrouped into pieces of exactly ``size`` bytes (the last one shorter)."""
    buf = bytearray()
    for chunk in chunks:
        if not buf and len(chunk) == size:
            yield chunk  # the common case (the tar reader's own chunks are a piece each): no copy
            continue
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def restore_checkpoint(
    manifest: Manifest,
    pieces: PieceStore,
    spec: WorkspaceSpec,
    *,
    max_bytes: int | None = None,
    owner: tuple[int, int] | None = None,
) -> Iterator[bytes]:
    """Validate every member now (UnsafeArchive, WorkspaceTooLarge), then return the tar chunks to
    extract; a piece that is missing or fails its hash raises SnapshotCorrupt naming it."""
    check_members(manifest.members(), spec, max_bytes)
    return coalesce(_reserialized(manifest, pieces, max_bytes, owner))


def _reserialized(
    manifest: Manifest, pieces: PieceStore, max_bytes: int | None, owner: tuple[int, int] | None
) -> Iterator[bytes]:
    files = {e.name: e for e in manifest.entries if e.type == "f"}
    stream = fetched(pieces, [p for e in manifest.entries if e.type == "f" for p in e.pieces])
    try:

        def data(member: tarfile.TarInfo) -> Iterator[bytes]:
            for _ in files[member.name].pieces:
                yield next(stream)

        yield from reserialize_members(manifest.members(), data, max_bytes, owner)
    finally:
        stream.close()


def fetched(pieces: PieceStore, refs: list[tuple[str, int]]) -> Generator[bytes, None, None]:
    """The verified plaintext of ``refs`` in order, fetched ``WORKERS`` at a time ahead of the reader."""
    todo = iter(refs)
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="pieces") as pool:
        pending: deque[Future[bytes]] = deque()
        try:
            for name, size in todo:
                pending.append(pool.submit(pieces.get, name, size))
                if len(pending) >= _WINDOW:
                    break
            while pending:
                data = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(pieces.get, *nxt))
                yield data
        finally:
            for future in pending:
                future.cancel()


def prefetch(manifest: Manifest, pieces: PieceStore) -> None:
    """Fetch and verify every piece now (into the cache): a missing or corrupt one fails here, before a
    container exists."""
    for _ in fetched(pieces, sorted(manifest.pieces().items())):
        pass


def copy_checkpoint(
    store: SnapshotStore, source: SnapshotInfo, manifest_bytes: bytes, key: str
) -> SnapshotInfo:
    """A fork: the source's manifest stored again under ``key``; no piece is copied.

    The source must still exist once the copy is stored: then it existed throughout, so every collection
    in between saw one manifest or the other naming the pieces (docs/checkpoints.md).
    """
    info = store.put(key, io.BytesIO(manifest_bytes))
    if store.stat(source.key) is None:
        store.delete(key)
        raise SnapshotNotFound(source.key)
    return info
