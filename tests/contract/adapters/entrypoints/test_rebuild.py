"""Projection rebuilds from stream-ordered reads: in one process, in parallel ranges, and on both stores."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from typing import Any, cast

import pytest

from sandbox_lifecycle.adapters.entrypoints import rebuild as rebuild_module
from sandbox_lifecycle.adapters.entrypoints.rebuild import Range, parallel_rebuild
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import fold_streams, iter_streams, rebuild, verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.codec import EventDecodeError
from sandbox_lifecycle.events.records import NewEvent
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

T = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    fixture = "clean_sqlite_url" if request.param == "sqlite" else "clean_pg_url"
    return str(request.getfixturevalue(fixture))


def populate(store: SqlEventStore | InMemoryEventStore, sandboxes: int) -> SandboxService:
    """Sandboxes in every kind of state, their streams interleaved in the log (turns take turns)."""
    service = SandboxService(store, FakeProvider(), clock=Clock(T))
    ids = [service.create("data-app", f"conv-{i}").id for i in range(sandboxes)]
    for round_ in range(3):
        for i in range(sandboxes):
            if (i + round_) % 4 == 0:
                continue
            with service.turn(f"conv-{i}", "data-app", keep_warm=i % 5 == 0) as handle:
                handle.write_file("f", b"x")
    for i, sid in enumerate(ids):
        if i % 7 == 3:
            service.destroy(sid)
        elif i % 7 == 5 and service.get(sid).state == "suspended":
            service.resume(sid)
    return service


@pytest.fixture
def worker_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process starts folding only once a worker has claimed a range.

    A test log is folded in milliseconds, long before a spawned worker is up: without this, the
    calling process would fold everything and the workers' side would go untested.
    """
    fold = rebuild_module._fold_claimed

    def after_a_worker(url: str, policy: Policy, ranges: list[Range], counter: Synchronized[int]) -> Any:
        deadline = time.monotonic() + 60
        while counter.value == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return fold(url, policy, ranges, counter)

    monkeypatch.setattr(rebuild_module, "_fold_claimed", after_a_worker)


@pytest.mark.parametrize("worker", [False, True], ids=["caller-first", "worker-first"])
def test_parallel_rebuild_equals_single_process_and_the_stored_projections(
    url: str, worker: bool, request: pytest.FixtureRequest
) -> None:
    if worker:
        request.getfixturevalue("worker_first")
    store = open_store(url)
    populate(store, 40)
    policy = Policy()
    single = parallel_rebuild(url, policy, 1)
    assert len(single) == 40
    assert verify(store, policy, rebuilt=single) == []
    assert verify(store, policy) == []
    for workers in (2, 3):
        parallel = parallel_rebuild(url, policy, workers)
        # Ordered by stream id whatever the number of processes, so equal as lists, not just as sets.
        assert parallel == single
    store.close()


def test_ranges_cover_every_stream_once_and_never_split_one(url: str) -> None:
    store = open_store(url)
    service = populate(store, 12)
    # One long stream among short ones: sampled many times, it must still be cut around, never through.
    long_id = service.create("data-app", "long").id
    for _ in range(60):
        cast(Clock, service.clock).advance(minutes=2)
        service.touch(long_id)
    everything = [(e.stream_id, e.version) for e in iter_streams(store)]
    assert sorted(everything) == sorted((e.stream_id, e.version) for e in store.read_all(limit=10_000))
    for parts in (2, 3, 8, 64):
        bounds = store.split_streams(parts)
        assert len(bounds) <= parts - 1 and len(set(bounds)) == len(bounds)
        starts = ["", *bounds]
        pieces = [
            [(e.stream_id, e.version) for e in iter_streams(store, first, before, batch=7)]
            for first, before in zip(starts, [*bounds, None], strict=True)
        ]
        # Each range is in (stream, version) order, and the ranges follow each other: the whole log.
        assert [key for piece in pieces for key in piece] == everything
        owners = {sid: i for i, piece in enumerate(pieces) for sid, _ in piece}
        assert all(owners[sid] == i for i, piece in enumerate(pieces) for sid, _ in piece)
    store.close()


def test_streams_spanning_pages_fold_as_a_whole(url: str) -> None:
    store = open_store(url)
    populate(store, 6)
    policy = Policy()
    whole = rebuild(store, policy)
    for batch in (1, 2, 5, 1000):
        states = list(fold_streams(iter_streams(store, batch=batch)))
        assert [s.id for s in states] == [p.row.id for p in whole]
        assert [s.version for s in states] == [p.row.version for p in whole]
    store.close()


def test_empty_log(url: str) -> None:
    store = open_store(url)
    assert store.split_streams(4) == []
    assert store.read_streams() == []
    assert rebuild(store, Policy()) == []
    store.close()
    for workers in (1, 2):
        assert parallel_rebuild(url, Policy(), workers) == []


def test_one_stream(url: str) -> None:
    store = open_store(url)
    service = SandboxService(store, FakeProvider())
    with service.turn("conv", "data-app"):
        pass
    assert store.split_streams(8) == []
    single = parallel_rebuild(url, Policy(), 1)
    assert len(single) == 1 and parallel_rebuild(url, Policy(), 2) == single
    assert verify(store, Policy(), rebuilt=single) == []
    store.close()


def test_a_bad_event_fails_the_parallel_rebuild_naming_it(url: str, worker_first: None) -> None:
    store = open_store(url)
    service = populate(store, 10)
    # In the first range, which the worker claims first: its error must reach the caller intact.
    victim = min(service.list(), key=lambda row: row.id)
    store.append(
        victim.id, victim.version, [NewEvent("Teleported", {}, T, metadata={"actor": "x", "reason": "y"})]
    )
    store.close()
    with pytest.raises(EventDecodeError) as info:
        parallel_rebuild(url, Policy(), 2)
    assert "Teleported" in str(info.value) and repr(victim.id) in str(info.value)
    assert (info.value.stream_id, info.value.version) == (victim.id, victim.version + 1)


def test_the_fake_store_reads_streams_like_the_real_one(clean_sqlite_url: str) -> None:
    real, fake = open_store(clean_sqlite_url), InMemoryEventStore()
    for store in (real, fake):
        for sid, n in (("b", 3), ("a", 2), ("c", 1), ("b2", 2)):
            for v in range(n):
                store.append(
                    sid, v, [NewEvent("ActivityRecorded", {"count": 1}, T, 2, {"actor": "a", "reason": "r"})]
                )

    def keys(store: SqlEventStore | InMemoryEventStore, **kwargs: object) -> list[tuple[str, int]]:
        return [(e.stream_id, e.version) for e in store.read_streams(**kwargs)]  # type: ignore[arg-type]

    for kwargs in ({}, {"after": ("b", 1)}, {"after": ("a", 2), "before": "b2"}, {"limit": 3}):
        assert keys(real, **kwargs) == keys(fake, **kwargs)
    assert keys(real) == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3), ("b2", 1), ("b2", 2), ("c", 1)]
    real.close()
