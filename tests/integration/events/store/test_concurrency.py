"""Racing writers and tailing readers, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from sandbox_lifecycle.events.records import ConcurrencyError, DatabaseLocked, RecordedEvent
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from sandbox_lifecycle.events.store.postgres import PG_LOCK
from tests.support.store_helpers import event, projection, race_append, row

THREADS = 16
PROCESSES = 4


def _race(racers: int, attempt: Callable[[int], object]) -> list[str]:
    barrier = threading.Barrier(racers, timeout=30)

    def run(i: int) -> str:
        barrier.wait()
        try:
            attempt(i)
        except ConcurrencyError:
            return "conflict"
        return "won"

    with ThreadPoolExecutor(racers) as pool:
        return list(pool.map(run, range(racers), timeout=120))


def test_threads_racing_at_one_version_exactly_one_wins(store: SqlEventStore) -> None:
    store.append("s", 0, [event()])

    outcomes = _race(THREADS, lambda i: store.append("s", 1, [event(n=i)]))

    assert sorted(outcomes) == ["conflict"] * (THREADS - 1) + ["won"]
    stream = store.read_stream("s")
    assert [e.version for e in stream] == [1, 2]


def test_threads_racing_for_one_conversation_exactly_one_gets_a_live_sandbox(store: SqlEventStore) -> None:
    outcomes = _race(
        THREADS,
        lambda i: store.append(
            f"s{i}", 0, [event()], projection=projection(row(f"s{i}", conversation_id="c"))
        ),
    )

    assert sorted(outcomes) == ["conflict"] * (THREADS - 1) + ["won"]
    (winner,) = store.list_sandboxes()
    assert store.find_live("c", "data-app") == winner
    assert store.stream_ids() == [winner.id]


def test_processes_racing_at_one_version_exactly_one_wins(store: SqlEventStore, db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=race_append, args=(db_url, "s", 0, barrier, results, i)) for i in range(PROCESSES)
    ]
    for p in processes:
        p.start()
    try:
        outcomes = [results.get(timeout=120) for _ in processes]
    finally:
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()

    assert sorted(outcomes) == ["conflict"] * (PROCESSES - 1) + ["won"]
    assert [e.version for e in store.read_stream("s")] == [1]


def test_tailing_reader_sees_every_event_once_in_order_while_writers_race(store: SqlEventStore) -> None:
    """Concurrent Postgres transactions commit out of sequence order; the tailer must not skip one."""
    writers, appends_each = 6, 250
    deadline = time.monotonic() + 60
    done = threading.Event()

    def write(w: int) -> None:
        for v in range(appends_each):
            if time.monotonic() > deadline:
                return
            batch = [event(n=v)] if v % 5 else [event(n=v), event(n=v)]
            store.append(f"w{w}", store_version[w], batch)
            store_version[w] += len(batch)

    store_version = [0] * writers
    seen: list[RecordedEvent] = []

    def tail() -> None:
        after = 0
        while time.monotonic() < deadline:
            finished = done.is_set()  # read before polling: a final poll after the last commit drains all
            page = store.read_all(after_position=after, limit=50)
            seen.extend(page)
            if page:
                after = page[-1].position
            elif finished:
                return

    tailer = threading.Thread(target=tail)
    tailer.start()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers), timeout=90))
    done.set()
    tailer.join(timeout=90)

    everything = store.read_all(limit=10_000)
    assert len(everything) == writers * appends_each * 6 // 5
    positions = [e.position for e in seen]
    assert positions == sorted(set(positions)), "the tailer saw an event twice or out of order"
    assert positions == [e.position for e in everything], "the tailer missed an event that committed late"


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    shutil.copyfile(sqlite_template, tmp_path / "sandbox_lifecycle.events.db")
    return f"sqlite:///{tmp_path / 'sandbox_lifecycle.events.db'}"


def _hold_write_lock(url: str) -> sqlite3.Connection:
    holder = sqlite3.connect(sa.make_url(url).database or "", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(
        "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at) "
        "VALUES ('held', 1, 'Held', 1, '{}', '{}', '2025-01-01 00:00:00.000000')"
    )
    return holder


def test_sqlite_second_writer_gives_up_with_database_locked_and_corrupts_nothing(sqlite_url: str) -> None:
    store = open_store(sqlite_url, busy_timeout=0.3)
    holder = _hold_write_lock(sqlite_url)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseLocked, match="another writer") as info:
            store.append("s", 0, [event()])
        assert time.monotonic() - started >= 0.25, "it must wait for the busy timeout before giving up"
        assert "0.3s" in str(info.value)
        assert store.read_all() == []  # readers are not blocked by the writer (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    try:
        store.append("s", 0, [event()])
        assert [e.stream_id for e in store.read_all()] == ["s"]
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


def test_sqlite_second_writer_waits_for_the_first(sqlite_url: str) -> None:
    store = open_store(sqlite_url, busy_timeout=10)
    holder = _hold_write_lock(sqlite_url)
    releaser = threading.Timer(0.4, lambda: holder.execute("COMMIT"))
    releaser.start()
    try:
        started = time.monotonic()
        store.append("s", 0, [event()])
        assert time.monotonic() - started >= 0.3
        assert sorted(e.stream_id for e in store.read_all()) == ["held", "s"]
    finally:
        releaser.join(timeout=10)
        holder.close()
        store.close()


@pytest.mark.postgres
def test_postgres_append_gives_up_with_database_locked_when_the_lock_is_held(pg_migrated_url: str) -> None:
    store = open_store(pg_migrated_url, lock_timeout=0.3)
    conninfo = sa.make_url(pg_migrated_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as stuck:
        stuck.execute(PG_LOCK)  # an append that never commits
        try:
            with pytest.raises(DatabaseLocked, match="stuck session"):
                store.append("locked", 0, [event()])
        finally:
            stuck.rollback()
    try:
        assert store.append("locked", 0, [event()]).version == 1
    finally:
        store.close()


def _append_many(url: str, prefix: str, rounds: int) -> None:
    """Process worker: ``rounds`` appends to a stream of its own, each with its projection."""
    store = open_store(url)
    try:
        for version in range(rounds):
            store.append(
                prefix, version, [event(n=version)], projection=projection(row(prefix, version=version + 1))
            )
    finally:
        store.close()


def test_racing_writers_keep_the_log_chain_whole(store: SqlEventStore, db_url: str) -> None:
    """Threads and processes appending at once: every event chains to the one committed before it
    (on Postgres the statement's snapshot predates the lock; the head row's update sees the newest)."""
    rounds = 15

    def thread(i: int) -> None:
        for version in range(rounds):
            store.append(f"t{i}", 2 * version, [event(n=version), event(n=-version)])

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(db_url, f"p{i}", rounds)) for i in range(PROCESSES)]
    for w in workers:
        w.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(thread, range(8), timeout=120))
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    from sandbox_lifecycle.core.audit import verify_chains

    report = verify_chains(store)
    assert report.ok, (report.broken, report.log)
    assert report.events == 8 * rounds * 2 + PROCESSES * rounds
    assert store.log_head() == report.head
