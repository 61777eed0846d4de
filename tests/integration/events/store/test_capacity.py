"""The capacity limit of an append: counted in the append's transaction, on every store.

The ceiling must hold at every moment across writers, so the tests race threads and processes that
make sandboxes live and suspend them again while a sampler reads the read model.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import sqlalchemy as sa

from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.events.records import CapacityLimit, CapacityRefused
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import InMemoryEventStore
from tests.support.fixtures.store import real_db_url
from tests.support.store_capacity_workers import LIVE_STATES, churn
from tests.support.store_helpers import event, projection, row

CAP3 = (CapacityLimit(LIVE_STATES, 3),)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    s = open_store(real_db_url(request.param, request))
    yield s
    s.close()


def _live(store: EventStore, sid: str, kind: str = "data-app", cap: tuple[CapacityLimit, ...] = CAP3) -> None:
    store.append(
        sid, 0, [event()], projection=projection(row(sid, state="creating", kind=kind)), capacity=cap
    )


def test_the_append_past_the_limit_is_refused_and_writes_nothing(store: EventStore) -> None:
    for i in range(3):
        _live(store, f"s{i}")

    with pytest.raises(CapacityRefused, match="limit 3") as info:
        _live(store, "s3")
    assert info.value.live == 3 and info.value.stream_id == "s3"
    assert store.read_stream("s3") == [] and store.get_sandbox("s3") is None

    # A suspended or expired sandbox holds no compute: suspending one frees its slot.
    down = replace(row("s0", state="suspended", version=2))
    store.append("s0", 1, [event()], projection=projection(down))
    _live(store, "s3")


def test_the_appended_sandbox_is_not_counted_twice(store: EventStore) -> None:
    for i in range(3):
        _live(store, f"s{i}")
    # s2 moving on within the live states (creating -> idle) is no new sandbox.
    store.append("s2", 1, [event()], projection=projection(row("s2", state="idle", version=2)), capacity=CAP3)


def test_a_kind_limit_counts_only_its_kind(store: EventStore) -> None:
    per_kind = (CapacityLimit(LIVE_STATES, 1, kind="ai-writeback"),)
    _live(store, "d1", cap=per_kind)
    _live(store, "a1", kind="ai-writeback", cap=per_kind)
    with pytest.raises(CapacityRefused, match="'ai-writeback' sandboxes"):
        _live(store, "a2", kind="ai-writeback", cap=per_kind)
    # Another kind's own limit counts its own kind only.
    _live(store, "d2", cap=(CapacityLimit(LIVE_STATES, 2, kind="data-app"),))


def test_threads_racing_for_the_last_slots_never_exceed_the_limit(store: EventStore) -> None:
    racers = 12
    barrier = threading.Barrier(racers, timeout=30)

    def run(i: int) -> str:
        barrier.wait()
        try:
            _live(store, f"s{i}")
        except CapacityRefused:
            return "refused"
        return "won"

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(run, range(racers), timeout=120))

    assert sorted(outcomes) == ["refused"] * (racers - 3) + ["won"] * 3
    assert len(store.list_sandboxes()) == 3


@pytest.mark.postgres
def test_processes_churning_on_postgres_never_hold_more_than_the_limit(
    request: pytest.FixtureRequest,
) -> None:
    """Six processes make a sandbox live and suspend it again, over and over, while a sampler reads
    the read model: no sample ever counts more than the limit. A count inside the single-statement
    append would pass the thread test above and fail this one (its snapshot predates the lock)."""
    url = real_db_url("postgres", request)
    workers, rounds, limit = 6, 25, 2
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=churn, args=(url, w, rounds, limit, barrier, results)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    marks = ", ".join(f"'{s}'" for s in LIVE_STATES)
    samples: list[int] = []
    try:
        barrier.wait(timeout=60)
        with engine.connect() as conn:
            while any(p.is_alive() for p in procs) and len(samples) < 20000:
                samples.append(
                    conn.exec_driver_sql(
                        f"SELECT count(*) FROM sandboxes WHERE state IN ({marks})"
                    ).scalar_one()
                )
                conn.rollback()
        outcomes = [results.get(timeout=120) for _ in procs]
    finally:
        engine.dispose()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()

    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    assert max(samples) <= limit, f"a sample saw {max(samples)} live sandboxes (limit {limit})"
    assert sum(won for won, _ in outcomes) > 0 and sum(refused for _, refused in outcomes) > 0
