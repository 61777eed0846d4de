"""Checkpoints of pieces: the round trip, reuse of the base's pieces, verification, the safety rules."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.snapshots.archive import WorkspaceTooLarge, pack_workspace, restore_stream
from sandbox_lifecycle.adapters.snapshots.checkpoint import (
    SuspendTooSlow,
    copy_checkpoint,
    prefetch,
    read_manifest,
    restore_checkpoint,
    write_checkpoint,
)
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.manifest import Entry as MEntry
from sandbox_lifecycle.adapters.snapshots.manifest import Manifest
from sandbox_lifecycle.adapters.snapshots.pieces import PIECE_PREFIX, PIECE_SIZE, PieceStore, piece_key
from sandbox_lifecycle.core.errors import ProviderError, SnapshotCorrupt, SnapshotNotFound, UnsafeArchive
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import SnapshotInfo
from tests.support.tarutil import dir_, docker_chunks, file, hardlink, members, symlink

SPEC = kind_spec("data-app").workspace
BIG = os.urandom(2 * PIECE_SIZE + 1234)
WORKSPACE = [
    dir_("app"),
    file("app/index.js", b"console.log(1)\n"),
    file("app/big.bin", BIG),
    file("app/empty", b""),
    symlink("app/current", "big.bin"),
    hardlink("app/index-copy.js", "app/index.js"),
    dir_("app/node_modules"),
    file("app/node_modules/x.js", b"dropped by the kind's excludes"),
    dir_(".claude"),
    file(".claude/settings.json", b"{}"),
]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> LocalSnapshotStore:
    return LocalSnapshotStore(tmp_path / "store")


def write(pieces: PieceStore, key: str, entries: list = WORKSPACE, base: str | None = None):  # type: ignore[type-arg]
    return write_checkpoint(docker_chunks(entries), SPEC, pieces, key, base_key=base, grace_s=3600)


def restored(pieces: PieceStore, key: str) -> dict:  # type: ignore[type-arg]
    manifest = Manifest.parse(read_manifest(pieces.store, key), key)
    return members(b"".join(restore_checkpoint(manifest, pieces, SPEC)))


def contents(pieces: PieceStore, key: str) -> dict[str, bytes]:
    return {name: data for name, (_, data) in restored(pieces, key).items()}


def piece_keys(store: LocalSnapshotStore) -> list[str]:
    return list(store.keys(PIECE_PREFIX))


def test_round_trip_restores_what_a_whole_archive_restores(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    written = write(pieces, "snapshots/s/2.tar.zst")
    packed = io.BytesIO(pack_workspace(docker_chunks(WORKSPACE), SPEC).read())
    whole = members(b"".join(restore_stream(packed, SPEC)))
    got = restored(pieces, "snapshots/s/2.tar.zst")
    assert sorted(got) == sorted(whole)
    for name, (info, data) in whole.items():
        assert got[name][1] == data
        assert (got[name][0].type, got[name][0].mode, got[name][0].linkname) == (
            info.type,
            info.mode,
            info.linkname,
        )
    assert written.workspace_bytes == len(BIG) + len(b"console.log(1)\n") + 2
    # big.bin is three pieces, index.js and settings.json one each; the hardlink and empty file none.
    assert len(piece_keys(store)) == 5
    assert written.bytes_new == sum(store.stat(k) or 0 for k in piece_keys(store))


def test_second_checkpoint_reuses_the_base_and_uploads_only_the_change(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    write(pieces, "snapshots/s/2.tar.zst")
    before = set(piece_keys(store))
    changed = [
        e if e.name != "app/big.bin" else file("app/big.bin", BIG[:-10] + b"0123456789") for e in WORKSPACE
    ]
    written = write(pieces, "snapshots/s/4.tar.zst", changed, base="snapshots/s/2.tar.zst")
    added = set(piece_keys(store)) - before
    assert len(added) == 1  # the last piece of big.bin only
    assert written.bytes_new == store.stat(added.pop())
    assert restored(pieces, "snapshots/s/4.tar.zst")["app/big.bin"][1].endswith(b"0123456789")


def test_without_a_base_nothing_found_in_the_store_is_reused(store: LocalSnapshotStore) -> None:
    # Reusing a piece because it exists is what a concurrent collection could delete under us.
    pieces = PieceStore(store)
    write(pieces, "snapshots/a/2.tar.zst")
    first = set(piece_keys(store))
    write(pieces, "snapshots/b/2.tar.zst")
    assert len(set(piece_keys(store)) - first) == len(first)


def test_a_missing_base_means_uploading_every_piece(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    write(pieces, "snapshots/s/2.tar.zst", base="snapshots/s/gone.tar.zst")
    assert len(piece_keys(store)) == 5


def test_a_missing_piece_fails_the_restore_naming_it(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    write(pieces, "snapshots/s/2.tar.zst")
    victim = piece_keys(store)[0]
    store.delete(victim)
    manifest = Manifest.parse(read_manifest(store, "snapshots/s/2.tar.zst"), "k")
    with pytest.raises(SnapshotCorrupt, match=victim):
        prefetch(manifest, pieces)
    with pytest.raises(SnapshotCorrupt, match=victim):
        b"".join(restore_checkpoint(manifest, pieces, SPEC))


def test_a_corrupt_piece_fails_the_restore_naming_it(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    write(pieces, "snapshots/s/2.tar.zst")
    victim = piece_keys(store)[0]
    other = piece_keys(store)[1]
    (store.root / victim).write_bytes((store.root / other).read_bytes())
    manifest = Manifest.parse(read_manifest(store, "snapshots/s/2.tar.zst"), "k")
    with pytest.raises(SnapshotCorrupt, match=victim):
        prefetch(manifest, pieces)


def test_a_manifest_escaping_the_root_is_refused_before_any_piece_is_read(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    bad = Manifest(
        [
            MEntry("app", "d", 0o755, 0),
            MEntry("app/x", "l", 0o777, 0, link="../../../etc"),
            MEntry("app/x/passwd", "f", 0o644, 0, size=1, pieces=[("a" * 64 + "-1-" + "0" * 16, 1)]),
        ]
    )
    with pytest.raises(UnsafeArchive, match="app/x"):
        restore_checkpoint(bad, pieces, SPEC)


def test_a_suspend_past_half_the_grace_stores_no_manifest(store: LocalSnapshotStore) -> None:
    clock = Clock()

    class Slow(PieceStore):
        def put(self, sha256: str, data: bytes) -> tuple[str, int]:
            clock.now += 1801
            return super().put(sha256, data)

    with pytest.raises(SuspendTooSlow):
        write(Slow(store, clock=clock), "snapshots/s/2.tar.zst")
    assert store.stat("snapshots/s/2.tar.zst") is None


def test_a_suspend_just_within_half_the_grace_stores_its_manifest(store: LocalSnapshotStore) -> None:
    clock = Clock()

    class Slow(PieceStore):
        def put(self, sha256: str, data: bytes) -> tuple[str, int]:
            clock.now = 1_000_000.0 + 1800
            return super().put(sha256, data)

    write(Slow(store, clock=clock), "snapshots/s/2.tar.zst")
    assert store.stat("snapshots/s/2.tar.zst") is not None


def test_a_base_deleted_during_the_suspend_fails_it_and_leaves_no_manifest(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    write(pieces, "snapshots/s/2.tar.zst")

    class Deleting(PieceStore):
        def put(self, sha256: str, data: bytes) -> tuple[str, int]:
            store.delete("snapshots/s/2.tar.zst")
            return super().put(sha256, data)

    changed = [*WORKSPACE, file("app/new", b"new")]
    with pytest.raises(ProviderError, match="base"):
        write(Deleting(store), "snapshots/s/4.tar.zst", changed, base="snapshots/s/2.tar.zst")
    assert store.stat("snapshots/s/4.tar.zst") is None


def test_a_fork_copies_the_manifest_only(store: LocalSnapshotStore) -> None:
    pieces = PieceStore(store)
    info = write(pieces, "snapshots/s/2.tar.zst").info
    before = piece_keys(store)
    data = read_manifest(store, info.key)
    copied = copy_checkpoint(store, info, data, "snapshots/f/1.tar.zst")
    assert copied.sha256 == info.sha256
    assert piece_keys(store) == before
    assert contents(pieces, "snapshots/f/1.tar.zst") == contents(pieces, "snapshots/s/2.tar.zst")


def test_a_fork_whose_source_went_meanwhile_fails_and_leaves_no_copy(store: LocalSnapshotStore) -> None:
    info = write(PieceStore(store), "snapshots/s/2.tar.zst").info
    data = read_manifest(store, info.key)
    store.delete(info.key)
    with pytest.raises(SnapshotNotFound):
        copy_checkpoint(store, SnapshotInfo(info.key, info.sha256, info.bytes), data, "snapshots/f/1.tar.zst")
    assert store.stat("snapshots/f/1.tar.zst") is None


def test_pieces_are_stamped_with_the_writers_clock(store: LocalSnapshotStore) -> None:
    write(PieceStore(store, clock=Clock(1234.5)), "snapshots/s/2.tar.zst")
    assert all("-1234500-" in k for k in piece_keys(store))
    assert all(k == piece_key(k.rsplit("/", 1)[1]) for k in piece_keys(store))


def test_a_checkpoint_past_the_disk_limit_is_refused_before_any_piece_is_read(
    store: LocalSnapshotStore,
) -> None:
    pieces = PieceStore(store)
    write(pieces, "snapshots/s/2.tar.zst")
    manifest = Manifest.parse(read_manifest(store, "snapshots/s/2.tar.zst"), "k")
    for key in piece_keys(store):
        store.delete(key)  # a piece read would fail with SnapshotCorrupt instead
    with pytest.raises(WorkspaceTooLarge):
        restore_checkpoint(manifest, pieces, SPEC, max_bytes=len(BIG))
