"""The log's chain over the global position, on SQLite and PostgreSQL: what needs no hash work to hide
from the per-stream chains (a whole sandbox deleted, a stream cut short with its row set to match, a
stream's last event edited with its own hash recomputed) is named at the first position that no longer
chains to the one before it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sandbox_lifecycle.core.audit import AuditReport, verify_chains
from sandbox_lifecycle.events import chain
from sandbox_lifecycle.events.store import SqlEventStore
from tests.support.store_helpers import event, projection, row

STREAMS = ("a", "bad", "z")


@pytest.fixture
def sql(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def filled(store: SqlEventStore) -> SqlEventStore:
    """Streams a, bad, z at version 3 each, interleaved, then one event of ``tail``: nothing the tests
    remove is at the end of the log (that is what only a head kept elsewhere can show)."""
    for version in range(3):
        for sid in STREAMS:
            store.append(
                sid, version, [event(n=version)], projection=projection(row(sid, version=version + 1))
            )
    store.append("tail", 0, [event(n=9)], projection=projection(row("tail")))
    return store


def _run(sql: sa.Engine, *statements: str) -> None:
    with sql.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _position(sql: sa.Engine, stream_id: str, version: int) -> int:
    with sql.connect() as conn:
        found = conn.exec_driver_sql(
            f"SELECT position FROM events WHERE stream_id = '{stream_id}' AND version = {version}"
        ).scalar_one()
    return int(found)


def _next_position(sql: sa.Engine, position: int) -> int:
    with sql.connect() as conn:
        found = conn.exec_driver_sql(f"SELECT min(position) FROM events WHERE position > {position}")
        return int(found.scalar_one())


def _log_break(report: AuditReport) -> int | None:
    return None if report.log is None else report.log.position


def test_an_intact_log_chains_over_its_positions(filled: SqlEventStore) -> None:
    report = verify_chains(filled, page=4)
    assert report.ok and report.log is None
    links = filled.read_links(0, 100)
    previous = None
    for position, stream_hash, log_hash, _key in links:
        assert stream_hash is not None
        previous = chain.log_link(previous, position, stream_hash)
        assert log_hash == previous
    assert filled.log_head() == (links[-1][0], links[-1][2])


def test_a_deleted_sandbox_with_its_rows_is_named(filled: SqlEventStore, sql: sa.Engine) -> None:
    last = _position(sql, "bad", 3)
    _run(
        sql,
        "DELETE FROM events WHERE stream_id = 'bad'",
        "DELETE FROM sandboxes WHERE id = 'bad'",
        "DELETE FROM sandbox_deadlines WHERE sandbox_id = 'bad'",
    )
    report = verify_chains(filled, page=4)
    assert not report.ok
    assert report.broken == []  # every remaining stream is whole: only the log's chain shows it
    # The first survivor after bad's first event no longer chains to the event before it.
    assert _log_break(report) == _next_position(sql, _position(sql, "a", 1))
    assert last < _position(sql, "tail", 1)


def test_a_stream_cut_short_with_its_row_set_to_match_is_named(filled: SqlEventStore, sql: sa.Engine) -> None:
    gone = _position(sql, "a", 3)
    _run(
        sql,
        "DELETE FROM events WHERE stream_id = 'a' AND version = 3",
        "UPDATE sandboxes SET version = 2 WHERE id = 'a'",
    )
    report = verify_chains(filled, page=4)
    assert not report.ok and report.broken == []
    assert _log_break(report) == _next_position(sql, gone)


def test_an_edited_last_event_with_its_own_hash_recomputed_is_named(
    filled: SqlEventStore, sql: sa.Engine
) -> None:
    data = """'{"n": 42, "nested": {"list": [1, "two"]}}'"""
    _run(sql, f"UPDATE events SET data = {data} WHERE stream_id = 'z' AND version = 3")
    items = [c for c in filled.read_chain() if c.event.stream_id == "z"]
    forged = chain.event_hash(items[1].hash, items[2].event)
    _run(sql, f"UPDATE events SET hash = '{forged}' WHERE stream_id = 'z' AND version = 3")
    report = verify_chains(filled, page=4)
    assert not report.ok and report.broken == []
    assert _log_break(report) == _position(sql, "z", 3)


def test_an_edit_with_both_its_hashes_recomputed_is_named_at_the_next_position(
    filled: SqlEventStore, sql: sa.Engine
) -> None:
    data = """'{"n": 42, "nested": {"list": [1, "two"]}}'"""
    at = _position(sql, "z", 2)
    _run(sql, f"UPDATE events SET data = {data} WHERE stream_id = 'z' AND version = 2")
    # The forger recomputes the whole stream and the edited event's log hash, not the log after it.
    items = [c for c in filled.read_chain() if c.event.stream_id == "z"]
    previous = items[0].hash
    for item in items[1:]:
        previous = chain.event_hash(previous, item.event)
        _run(
            sql,
            f"UPDATE events SET hash = '{previous}' WHERE stream_id = 'z' AND version = {item.event.version}",
        )
    links = {p: (h, g) for p, h, g, _k in filled.read_links(0, 100)}
    before = max(p for p in links if p < at)
    log_hash = chain.log_link(links[before][1], at, links[at][0] or "")
    _run(sql, f"UPDATE events SET log_hash = '{log_hash}' WHERE position = {at}")
    report = verify_chains(filled, page=4)
    assert report.broken == []
    assert _log_break(report) == _next_position(sql, at)


def test_events_cut_from_the_end_of_the_log_are_named_by_the_head_row(
    filled: SqlEventStore, sql: sa.Engine
) -> None:
    _run(sql, "DELETE FROM events WHERE stream_id = 'tail'", "DELETE FROM sandboxes WHERE id = 'tail'")
    report = verify_chains(filled, page=4)
    assert not report.ok and report.log is not None
    assert "head" in report.log.detail


def test_the_schema_refuses_positions_below_one(store: SqlEventStore, sql: sa.Engine) -> None:
    """Revision 0004's CHECK: the store never writes there and the feed never shows such a row."""
    store.append("a", 0, [event()])
    for position in (0, -1):
        with pytest.raises(sa.exc.IntegrityError, match="ck_events_position_positive"), sql.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO events (position, stream_id, version, type, schema_version, data, meta, "
                f"occurred_at) SELECT {position}, 'b', 1, type, schema_version, data, meta, occurred_at "
                "FROM events WHERE position = 1"
            )


def test_read_links_reads_from_the_first_row_whatever_its_position(filled: SqlEventStore) -> None:
    links = filled.read_links()
    assert [link.position for link in links] == list(range(1, 11))
    assert filled.read_links(None, 3) == links[:3] and filled.read_links(3, 2) == links[3:5]


def test_the_idempotency_key_is_in_the_log_chain(store: SqlEventStore, sql: sa.Engine) -> None:
    store.append("a", 0, [event(), event(n=1)], idempotency_key="req-1")
    links = store.read_links()
    assert [link.idempotency_key for link in links] == ["req-1", None]
    assert links[0].log_hash == chain.log_link(None, 1, links[0].hash or "", "req-1")
    assert chain.log_link(None, 1, "ab", "") != chain.log_link(None, 1, "ab", None)
    _run(sql, "UPDATE events SET idempotency_key = NULL WHERE position = 1")
    report = verify_chains(store)
    assert report.log is not None and report.log.position == 1
