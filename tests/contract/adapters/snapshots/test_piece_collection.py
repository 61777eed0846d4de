"""Piece collection against concurrent suspends and forks, on the local store and S3 (moto).

A collection (and, for forks, retention deleting the source) runs before *every* store operation of a
suspend or a fork, in turn, driven by the store itself (no sleeps). Whatever the interleaving, no
manifest present may name a missing piece, and once everything is past the grace a pass leaves exactly
the pieces the manifests name.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from sandbox_lifecycle.adapters.snapshots.checkpoint import (
    SuspendTooSlow,
    copy_checkpoint,
    read_manifest,
    restore_checkpoint,
    write_checkpoint,
)
from sandbox_lifecycle.adapters.snapshots.collect import collect_pieces
from sandbox_lifecycle.adapters.snapshots.manifest import Manifest
from sandbox_lifecycle.adapters.snapshots.pieces import PieceStore
from sandbox_lifecycle.core.errors import ProviderError, SnapshotNotFound
from sandbox_lifecycle.core.ports import SnapshotInfo, SnapshotStore
from tests.support.pieces import (
    BASE,
    GRACE_S,
    NEW,
    OLD,
    SPEC,
    Clock,
    HookedStore,
    changed,
    missing,
    pieces,
    referenced,
    seeded,
    workspace,
)
from tests.support.tarutil import docker_chunks, members


def ops_of(run: Callable[[SnapshotStore], object], store: SnapshotStore) -> int:
    counting = HookedStore(store, lambda n: None)
    run(counting)
    return counting.ops


def restored(store: SnapshotStore, key: str) -> dict[str, bytes]:
    manifest = Manifest.parse(read_manifest(store, key), key)
    return {
        n: d for n, (_, d) in members(b"".join(restore_checkpoint(manifest, PieceStore(store), SPEC))).items()
    }


def finish(store: SnapshotStore, clock: Clock) -> None:
    """Everything past the grace: one pass leaves exactly the named pieces."""
    clock.now += 2 * GRACE_S
    done = collect_pieces(store, grace_s=GRACE_S, clock=clock)
    assert done.aborted is None
    assert pieces(store) == referenced(store)


@pytest.mark.parametrize("jump", [0.0, 0.6 * GRACE_S])
def test_a_collection_at_any_step_of_a_suspend_never_takes_a_piece_it_needs(
    store: SnapshotStore, jump: float
) -> None:
    def suspend(into: SnapshotStore, clock: Clock) -> None:
        write_checkpoint(docker_chunks(changed()), SPEC, PieceStore(into, clock=clock), NEW,
                         base_key=BASE, grace_s=GRACE_S)  # fmt: skip

    probe_clock = Clock(1_000_000.0)
    seeded(store, probe_clock)
    steps = ops_of(lambda s: suspend(s, probe_clock), store)
    for victim in (OLD, NEW, *list(store.keys("pieces/"))):
        store.delete(victim)
    for step in range(1, steps + 2):
        clock = Clock(1_000_000.0 + step * 10 * GRACE_S)
        seeded(store, clock)

        def collect_now(n: int, at: int = step, clock: Clock = clock) -> None:
            if n == at:
                clock.now += jump  # a suspend that has been slow (or a collector whose clock runs ahead)
                store.delete(OLD)  # retention deletes another checkpoint at the same moment
                collect_pieces(store, grace_s=GRACE_S, clock=clock)

        try:
            suspend(HookedStore(store, collect_now), clock)
        except SuspendTooSlow:
            assert jump and store.stat(NEW) is None
        assert missing(store) == {}, f"collection before step {step}"
        if store.stat(NEW) is not None:
            assert restored(store, NEW) == {e.name: e.data for e in changed() if e.name != "app"} | {
                "app": b""
            }
        finish(store, clock)
        for key in (BASE, NEW, OLD, *list(store.keys("pieces/"))):
            store.delete(key)


def test_a_collection_and_the_sources_deletion_at_any_step_of_a_fork_never_strand_it(
    store: SnapshotStore,
) -> None:
    fork_key = "snapshots/f/1.tar.zst"

    def fork(into: SnapshotStore, source: SnapshotInfo) -> None:
        copy_checkpoint(into, source, read_manifest(into, source.key), fork_key)

    probe_clock = Clock(1_000_000.0)
    probe = seeded(store, probe_clock)
    steps = ops_of(lambda s: fork(s, probe), store)
    for step in range(1, steps + 2):
        for key in (BASE, OLD, fork_key, *list(store.keys("pieces/"))):
            store.delete(key)
        clock = Clock(1_000_000.0 + step * 10 * GRACE_S)
        source = seeded(store, clock)

        def retention_then_collect(n: int, at: int = step, clock: Clock = clock) -> None:
            if n == at:
                store.delete(BASE)  # the source's checkpoint collected by retention meanwhile
                collect_pieces(store, grace_s=GRACE_S, clock=clock)

        try:
            fork(HookedStore(store, retention_then_collect), source)
        except SnapshotNotFound:
            assert store.stat(fork_key) is None, f"a failed fork left its manifest (step {step})"
        else:
            assert step > steps, "the fork succeeded although its source went"
        assert missing(store) == {}, f"collection before step {step}"
        finish(store, clock)


def test_a_base_deleted_before_the_manifest_fails_the_suspend_safely(store: SnapshotStore) -> None:
    # Core never does this (it keeps a live sandbox's base); the writer still refuses to rely on it.
    clock = Clock(1_000_000.0)
    seeded(store, clock)
    calls = []

    def retention(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            store.delete(BASE)
            collect_pieces(store, grace_s=GRACE_S, clock=clock)

    with pytest.raises(ProviderError):
        hooked = PieceStore(HookedStore(store, retention), clock=clock)
        write_checkpoint(docker_chunks(changed()), SPEC, hooked, NEW, base_key=BASE, grace_s=GRACE_S)
    assert store.stat(NEW) is None
    assert missing(store) == {}
    finish(store, clock)


def test_a_manifest_deleted_while_a_collection_reads_it_aborts_the_collection(store: SnapshotStore) -> None:
    clock = Clock(1_000_000.0)
    seeded(store, clock)
    store.delete(OLD)
    before = pieces(store)

    def retention(n: int) -> None:
        if n == 3:  # after listing pieces and manifests, before reading the first manifest
            store.delete(BASE)

    done = collect_pieces(HookedStore(store, retention), grace_s=GRACE_S, clock=clock)
    assert done.aborted is not None and "deleted while" in done.aborted
    assert done.deleted == [] and pieces(store) == before


def test_young_unreferenced_pieces_stay_until_the_grace_is_over(store: SnapshotStore) -> None:
    clock = Clock(1_000_000.0)
    write_checkpoint(docker_chunks(workspace(b"x")), SPEC, PieceStore(store, clock=clock), OLD,
                     base_key=None, grace_s=GRACE_S)  # fmt: skip
    store.delete(OLD)
    made = pieces(store)
    clock.now += GRACE_S - 1
    assert collect_pieces(store, grace_s=GRACE_S, clock=clock).deleted == []
    clock.now += 2
    done = collect_pieces(store, grace_s=GRACE_S, clock=clock)
    assert len(done.deleted) == len(made) and pieces(store) == set()
    assert (done.pieces, done.manifests) == (len(made), 0)


def test_an_unreadable_manifest_aborts_the_collection_naming_it(store: SnapshotStore) -> None:
    clock = Clock(1_000_000.0)
    seeded(store, clock)
    store.delete(OLD)
    before = pieces(store)
    store.put("snapshots/u/2.tar.zst", io.BytesIO(b"SBXPIECES1\nnot zstd"))
    done = collect_pieces(store, grace_s=GRACE_S, clock=clock)
    assert done.aborted is not None and "snapshots/u/2.tar.zst" in done.aborted
    assert done.deleted == [] and pieces(store) == before
