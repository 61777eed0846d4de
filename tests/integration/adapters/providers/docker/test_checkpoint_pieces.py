"""Docker checkpoints of pieces: incremental suspends, verified resumes, archives of earlier releases,
forks that share pieces, and the sweep's collection (docs/checkpoints.md)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import PieceSettings
from sandbox_lifecycle.adapters.snapshots.archive import pack_workspace
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.errors import SnapshotCorrupt
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import SnapshotInfo
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import DEPLOYMENT, TEST_LIMITS
from tests.support.tarutil import dir_, docker_chunks, file

pytestmark = pytest.mark.docker

DATA_APP = "data-app"
NewId = Callable[[], str]


def pieces_of(store: LocalSnapshotStore) -> set[str]:
    return set(store.keys(f"{DEPLOYMENT}/pieces/"))


def uncached(store: LocalSnapshotStore, tmp_path: Path, **settings: object) -> DockerProvider:
    return DockerProvider(
        DOCKER_IMAGES,
        store,
        environ={},
        limits=TEST_LIMITS,
        deployment=DEPLOYMENT,
        pieces=PieceSettings(cache_mb=0, cache_dir=tmp_path / "unused", **settings),  # type: ignore[arg-type]
    )


def test_the_second_suspend_uploads_only_what_changed(
    provider: DockerProvider, store: LocalSnapshotStore, new_id: NewId
) -> None:
    sid = new_id()
    ref = provider.create(sid, DATA_APP)
    big = os.urandom(3 << 20)
    provider.write_file(ref, "app/big.bin", big)
    first = provider.suspend(sid, ref, DATA_APP, f"snapshots/{sid}/2.tar.zst")
    assert first.workspace_bytes == len(big)
    assert first.bytes_new is not None and first.bytes_new >= len(big)
    ref = provider.resume(sid, DATA_APP, first)
    provider.write_file(ref, "app/small.txt", b"one turn's change")
    before = pieces_of(store)
    second = provider.suspend(sid, ref, DATA_APP, f"snapshots/{sid}/4.tar.zst")
    assert len(pieces_of(store) - before) == 1
    assert second.bytes_new is not None and 0 < second.bytes_new < 100
    ref = provider.resume(sid, DATA_APP, second)
    assert provider.read_file(ref, "app/big.bin") == big
    assert provider.read_file(ref, "app/small.txt") == b"one turn's change"
    provider.destroy(sid, ref)


def test_a_missing_piece_fails_the_resume_naming_it_and_leaves_no_container(
    store: LocalSnapshotStore, tmp_path: Path, new_id: NewId
) -> None:
    provider = uncached(store, tmp_path)
    sid = new_id()
    ref = provider.create(sid, DATA_APP)
    provider.write_file(ref, "app/a.txt", b"A")
    info = provider.suspend(sid, ref, DATA_APP, f"snapshots/{sid}/2.tar.zst")
    (victim,) = pieces_of(store)
    store.delete(victim)
    with pytest.raises(SnapshotCorrupt, match=victim.removeprefix(f"{DEPLOYMENT}/")):
        provider.resume(sid, DATA_APP, info)
    assert provider.instance(sid) is None
    assert store.stat(f"{DEPLOYMENT}/snapshots/{sid}/2.tar.zst") is not None  # nothing else lost


def test_an_archive_of_an_earlier_release_still_resumes(
    provider: DockerProvider, store: LocalSnapshotStore, new_id: NewId
) -> None:
    sid = new_id()
    packed = pack_workspace(
        docker_chunks([dir_("app"), file("app/old.txt", b"from 2025")]), kind_spec(DATA_APP).workspace
    )
    put = store.put(f"{DEPLOYMENT}/snapshots/{sid}/2.tar.zst", packed)
    ref = provider.resume(sid, DATA_APP, SnapshotInfo(f"snapshots/{sid}/2.tar.zst", put.sha256, put.bytes))
    assert provider.read_file(ref, "old.txt") == b"from 2025"
    # Its next suspend has no pieces to reuse (the base is an archive) and stores a manifest.
    info = provider.suspend(sid, ref, DATA_APP, f"snapshots/{sid}/4.tar.zst")
    assert info.workspace_bytes == len(b"from 2025")
    ref = provider.resume(sid, DATA_APP, info)
    assert provider.read_file(ref, "old.txt") == b"from 2025"
    provider.destroy(sid, ref)


def test_a_fork_stores_no_piece_and_collection_keeps_what_checkpoints_name(
    store: LocalSnapshotStore, tmp_path: Path, new_id: NewId
) -> None:
    provider = uncached(store, tmp_path)

    def sweep() -> list[str]:
        # A provider of its own per pass, whose grace every piece is past by now.
        sweeper = uncached(store, tmp_path, grace_ms=1)
        return [r for r in sweeper.remove_stale_uploads(datetime.now(UTC)) if "pieces/" in r]

    sid, fork = new_id(), new_id()
    ref = provider.create(sid, DATA_APP)
    provider.write_file(ref, "app/a.txt", b"A")
    info = provider.suspend(sid, ref, DATA_APP, f"snapshots/{sid}/2.tar.zst")
    before = pieces_of(store)
    copied = provider.copy_snapshot(info, f"snapshots/{fork}/1.tar.zst")
    assert pieces_of(store) == before and copied.sha256 == info.sha256
    provider.delete_snapshot(info)
    # The fork's manifest still names the pieces: the sweep keeps them, and the fork resumes.
    assert sweep() == []
    ref = provider.resume(fork, DATA_APP, copied)
    assert provider.read_file(ref, "app/a.txt") == b"A"
    provider.destroy(fork, ref)
    provider.delete_snapshot(copied)
    assert len(sweep()) == len(before)
    assert pieces_of(store) == set()
