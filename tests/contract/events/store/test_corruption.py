"""A corrupt stream is named (CorruptStream: stream, version, detail), never a raw traceback.

Rows are corrupted behind the store's back with raw SQL, as a bad migration, a manual fix or a torn
restore would leave them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.codec import decode, encode
from sandbox_lifecycle.events.records import CorruptStream, RecordedEvent
from sandbox_lifecycle.events.store import SqlEventStore
from tests.support.store_helpers import T0


def _life(at_minutes: int = 0) -> list[ev.Event]:
    at = T0 + timedelta(minutes=at_minutes)
    base = {"actor": "t", "reason": "r"}
    return [
        ev.CreationRequested(at=at, kind="data-app", provider="docker", **base),
        ev.Created(at=at, provider_ref="ref", **base),
        ev.ActivityRecorded(at=at, count=2, **base),
        ev.ActivityRecorded(at=at, count=3, **base),
    ]


@pytest.fixture
def sql(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def filled(store: SqlEventStore) -> SqlEventStore:
    """Streams a, bad, z: four events each, appended one at a time, interleaved."""
    lives = {sid: _life() for sid in ("a", "bad", "z")}
    for version in range(4):
        for sid, life in lives.items():
            store.append(sid, version, [encode(life[version])])
    return store


def _corrupt(sql: sa.Engine, statement: str) -> None:
    with sql.begin() as conn:
        assert conn.exec_driver_sql(statement).rowcount == 1


def _decoded(records: list[RecordedEvent]) -> None:
    for r in records:
        decode(r)


def _assert_named(info: pytest.ExceptionInfo[CorruptStream], version: int, *words: str) -> None:
    assert (info.value.stream_id, info.value.version) == ("bad", version)
    assert "'bad'" in str(info.value) and f"version {version}" in str(info.value)
    for word in words:
        assert word in info.value.detail


def _every_reader_names(store: SqlEventStore, version: int, *words: str) -> None:
    """read_stream, the feed and the bulk stream reader all name the same stream and version."""
    for read in (
        lambda: store.read_stream("bad"),
        lambda: store.read_all(),
        lambda: store.read_streams(),
        lambda: store.read_streams(after=("a", 4), before="z"),
    ):
        with pytest.raises(CorruptStream) as info:
            _decoded(read())
        _assert_named(info, version, *words)
    # The other streams still read: one bad sandbox must not stop work on the rest.
    assert [e.version for e in store.read_stream("a")] == [1, 2, 3, 4]
    assert [e.stream_id for e in store.read_streams(after=("bad", 4))] == ["z"] * 4


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_invalid_json_names_the_stream_and_version(filled: SqlEventStore, sql: sa.Engine) -> None:
    # Only SQLite can hold it: Postgres' jsonb refuses invalid JSON on write.
    _corrupt(sql, "UPDATE events SET data = '{\"count\": 2' WHERE stream_id = 'bad' AND version = 3")
    _every_reader_names(filled, 3, "JSON")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_json_that_splits_into_extra_values_is_refused_not_misaligned(
    filled: SqlEventStore, sql: sa.Engine
) -> None:
    # Two JSON values in one column: read together with the metadata, it must not shift the fields.
    _corrupt(sql, "UPDATE events SET data = '{\"count\": 2}, {}' WHERE stream_id = 'bad' AND version = 3")
    _every_reader_names(filled, 3, "JSON")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_bad_occurred_at_names_the_stream_and_version(filled: SqlEventStore, sql: sa.Engine) -> None:
    _corrupt(sql, "UPDATE events SET occurred_at = 'yesterday' WHERE stream_id = 'bad' AND version = 2")
    _every_reader_names(filled, 2, "occurred_at", "yesterday")


@pytest.mark.parametrize(
    "data",
    ['{"count": "three"}', '"not an object"', "[1, 2]", "null"],
    ids=["wrong-typed-field", "string", "array", "null"],
)
def test_wrong_typed_payload_names_the_stream_and_version(
    filled: SqlEventStore, sql: sa.Engine, data: str
) -> None:
    _corrupt(sql, f"UPDATE events SET data = '{data}' WHERE stream_id = 'bad' AND version = 4")
    _every_reader_names(filled, 4)


def test_wrong_typed_metadata_names_the_stream_and_version(filled: SqlEventStore, sql: sa.Engine) -> None:
    _corrupt(
        sql,
        """UPDATE events SET meta = '{"actor": 7, "reason": "r"}' WHERE stream_id = 'bad' AND version = 1""",
    )
    _every_reader_names(filled, 1, "actor")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_wrong_typed_schema_version_names_the_stream_and_version(
    filled: SqlEventStore, sql: sa.Engine
) -> None:
    _corrupt(sql, "UPDATE events SET schema_version = 'two' WHERE stream_id = 'bad' AND version = 3")
    _every_reader_names(filled, 3, "schema")


@pytest.mark.parametrize("missing", [1, 2, 3])
def test_a_deleted_event_is_a_gap_named_at_the_missing_version(
    filled: SqlEventStore, sql: sa.Engine, missing: int
) -> None:
    _corrupt(sql, f"DELETE FROM events WHERE stream_id = 'bad' AND version = {missing}")
    for read in (lambda: filled.read_stream("bad"), lambda: filled.read_streams()):
        with pytest.raises(CorruptStream) as info:
            read()
        _assert_named(info, missing, "missing")
    assert [e.version for e in filled.read_stream("a")] == [1, 2, 3, 4]


def test_a_gap_is_found_from_any_starting_point_and_across_pages(
    filled: SqlEventStore, sql: sa.Engine
) -> None:
    _corrupt(sql, "DELETE FROM events WHERE stream_id = 'bad' AND version = 3")
    with pytest.raises(CorruptStream) as info:
        filled.read_stream("bad", after_version=1)
    _assert_named(info, 3, "missing")
    assert [e.version for e in filled.read_stream("bad", after_version=3)] == [4]

    # Pages of two: the gap falls on a page boundary, where the page alone looks whole.
    pages, after = 0, ("", 0)
    with pytest.raises(CorruptStream) as info:
        while page := filled.read_streams(after=after, limit=2):
            pages += 1
            after = (page[-1].stream_id, page[-1].version)
    _assert_named(info, 3, "missing")
    assert pages == 3  # a: 1-2, a: 3-4, bad: 1-2; then bad continues at 4
