"""The hash chain on SQLite and PostgreSQL: written in the append, recomputable from a read, and every
kind of tampering done behind the store's back with raw SQL is named with its stream and first bad
version."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta, timezone

import pytest
import sqlalchemy as sa

from sandbox_lifecycle.core.audit import verify_chains
from sandbox_lifecycle.events import chain
from sandbox_lifecycle.events.records import NewEvent
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from tests.support.store_helpers import T0, event, projection, row

STREAMS = ("a", "bad", "z")


@pytest.fixture
def sql(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def filled(store: SqlEventStore) -> SqlEventStore:
    """Streams a, bad, z at version 5 each, appended interleaved, each with its read-model row."""
    for version in range(5):
        for sid in STREAMS:
            store.append(
                sid, version, [event(n=version)], projection=projection(row(sid, version=version + 1))
            )
    return store


def _run(sql: sa.Engine, *statements: str) -> None:
    with sql.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _broken(store: SqlEventStore) -> list[tuple[str, int]]:
    return [(b.stream_id, b.version) for b in verify_chains(store, page=4).broken]


def test_every_append_stores_the_chain_hash_a_reader_recomputes(store: SqlEventStore, db_url: str) -> None:
    odd = NewEvent(
        type="Odd",
        data={"z": 1, "a": ["é", {"y": None, "b": 2.5}], "big": 2**53},
        # Not UTC on purpose: the hash is over the UTC instant, as the store keeps it.
        occurred_at=T0.astimezone(timezone(timedelta(hours=-5))),
        metadata={"reason": "r", "actor": "t"},
    )
    store.append("s", 0, [event(n=1)])
    store.append("s", 1, [event(n=2), odd, event(n=3)])  # a batch chains inside itself
    other = open_store(db_url)  # another process: no remembered head, reads the previous hash
    try:
        other.append("s", 4, [event(n=4)])
    finally:
        other.close()
    store.append("s", 5, [event(n=5)])  # this store's remembered head is stale: it must not be used

    previous = None
    chained = store.read_chain()
    assert [c.event.version for c in chained] == [1, 2, 3, 4, 5, 6]
    for item in chained:
        previous = chain.event_hash(previous, item.event)
        assert item.hash == previous
    report = verify_chains(store)
    assert (report.ok, report.streams, report.events) == (True, 1, 6)


def test_a_refused_append_leaves_the_chain_whole(store: SqlEventStore) -> None:
    store.append("s", 0, [event(n=1)])
    with pytest.raises(Exception, match="no longer at version"):
        store.append("s", 0, [event(n=9)])
    store.append("s", 1, [event(n=2)])
    assert verify_chains(store).ok


def test_an_intact_log_verifies_across_pages(filled: SqlEventStore) -> None:
    report = verify_chains(filled, page=4)
    assert (report.ok, report.streams, report.events) == (True, 3, 15)


def test_an_edited_payload_is_named_at_its_version(filled: SqlEventStore, sql: sa.Engine) -> None:
    data = """'{"n": 99, "nested": {"list": [1, "two"]}}'"""
    _run(sql, f"UPDATE events SET data = {data} WHERE stream_id = 'bad' AND version = 3")
    assert _broken(filled) == [("bad", 3)]


def test_an_edited_type_or_metadata_is_named(filled: SqlEventStore, sql: sa.Engine) -> None:
    _run(
        sql,
        "UPDATE events SET type = 'Forged' WHERE stream_id = 'a' AND version = 2",
        "UPDATE events SET meta = '{\"actor\": \"someone else\"}' WHERE stream_id = 'bad' AND version = 4",
    )
    assert _broken(filled) == [("a", 2), ("bad", 4)]


def test_an_edited_time_is_named(filled: SqlEventStore, sql: sa.Engine, backend: str) -> None:
    later = "'2025-01-01 12:00:01.000000'" if backend == "sqlite" else "'2025-01-01 12:00:01+00'"
    _run(sql, f"UPDATE events SET occurred_at = {later} WHERE stream_id = 'z' AND version = 5")
    assert _broken(filled) == [("z", 5)]


def test_a_recomputed_hash_does_not_hide_an_edit_from_the_rest_of_the_chain(
    filled: SqlEventStore, sql: sa.Engine
) -> None:
    # The forger fixes the edited event's own hash but not the ones after it.
    data = """'{"n": 42, "nested": {"list": [1, "two"]}}'"""
    _run(sql, f"UPDATE events SET data = {data} WHERE stream_id = 'bad' AND version = 2")
    items = [c for c in filled.read_chain() if c.event.stream_id == "bad"]
    forged = chain.event_hash(items[0].hash, items[1].event)
    _run(sql, f"UPDATE events SET hash = '{forged}' WHERE stream_id = 'bad' AND version = 2")
    assert _broken(filled) == [("bad", 3)]


def test_a_deleted_event_is_named_at_the_missing_version(filled: SqlEventStore, sql: sa.Engine) -> None:
    _run(sql, "DELETE FROM events WHERE stream_id = 'bad' AND version = 2")
    assert _broken(filled) == [("bad", 2)]


def test_events_deleted_from_the_end_are_named(filled: SqlEventStore, sql: sa.Engine) -> None:
    _run(sql, "DELETE FROM events WHERE stream_id = 'z' AND version >= 4")
    report = verify_chains(filled)
    assert [(b.stream_id, b.version) for b in report.broken] == [("z", 4)]
    assert "deleted from its end" in report.broken[0].detail


def test_an_inserted_event_is_named(filled: SqlEventStore, sql: sa.Engine) -> None:
    # Versions 3.. moved up by one to make room, and a copy of version 2 (with its hash) put at 3.
    _run(
        sql,
        "UPDATE events SET version = version + 100 WHERE stream_id = 'bad' AND version >= 3",
        "UPDATE events SET version = version - 99 WHERE stream_id = 'bad' AND version > 100",
        "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at, hash) "
        "SELECT stream_id, 3, type, schema_version, data, meta, occurred_at, hash FROM events "
        "WHERE stream_id = 'bad' AND version = 2",
    )
    assert _broken(filled) == [("bad", 3)]


def test_an_event_inserted_without_a_hash_is_named(filled: SqlEventStore, sql: sa.Engine) -> None:
    _run(
        sql,
        "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at) "
        "SELECT stream_id, 6, type, schema_version, data, meta, occurred_at FROM events "
        "WHERE stream_id = 'a' AND version = 5",
    )
    report = verify_chains(filled)
    assert [(b.stream_id, b.version) for b in report.broken] == [("a", 6)]
    assert "no hash" in report.broken[0].detail


def test_reordered_events_are_named_at_the_first_moved_version(filled: SqlEventStore, sql: sa.Engine) -> None:
    _run(
        sql,
        "UPDATE events SET version = -1 WHERE stream_id = 'bad' AND version = 2",
        "UPDATE events SET version = 2 WHERE stream_id = 'bad' AND version = 4",
        "UPDATE events SET version = 4 WHERE stream_id = 'bad' AND version = -1",
    )
    assert _broken(filled) == [("bad", 2)]


def test_every_tampered_stream_is_named_once(filled: SqlEventStore, sql: sa.Engine) -> None:
    _run(
        sql,
        "DELETE FROM events WHERE stream_id = 'a' AND version = 1",
        "UPDATE events SET type = 'X' WHERE stream_id = 'bad' AND version IN (2, 4)",
        "UPDATE events SET schema_version = 7 WHERE stream_id = 'z' AND version = 5",
    )
    assert _broken(filled) == [("a", 1), ("bad", 2), ("z", 5)]


def test_an_unreadable_event_is_named_and_the_others_are_still_verified(
    filled: SqlEventStore, sql: sa.Engine, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("JSONB refuses malformed JSON: only SQLite can hold an unreadable row")
    _run(
        sql,
        "UPDATE events SET data = '{not json' WHERE stream_id = 'bad' AND version = 3",
        "UPDATE events SET type = 'X' WHERE stream_id = 'z' AND version = 1",
    )
    report = verify_chains(filled, page=4)
    assert [(b.stream_id, b.version) for b in report.broken] == [("bad", 3), ("z", 1)]
    assert report.events == 14  # every readable event was still checked
    # Named as unreadable, not as the gap it leaves for the versions read after it.
    assert "unreadable" in report.broken[0].detail
