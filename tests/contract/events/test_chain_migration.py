"""Migrations 0002 and 0004 on a log written before them: every event gets the stream hash and the log
hash the current code computes, so the old history verifies, appends chain on from the backfilled head,
and tampering after the migration is found."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import command

from sandbox_lifecycle.core.audit import verify_chains
from sandbox_lifecycle.events import chain
from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.codec import encode
from sandbox_lifecycle.events.migrate import _config, current, upgrade
from sandbox_lifecycle.events.store import open_store
from tests.support.store_helpers import T0

# What revision 0001's store wrote: no hash column.
_OLD_INSERT = sa.text(
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at) "
    "VALUES (:stream_id, :version, :type, :schema_version, :data, :meta, :occurred_at)"
)


def _old_log(url: str, streams: int, each: int) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    data = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    statement = _OLD_INSERT.bindparams(
        sa.bindparam("data", type_=data),
        sa.bindparam("meta", type_=data),
        sa.bindparam("occurred_at", type_=sa.DateTime(timezone=True)),
    )
    rows = []
    for version in range(1, each + 1):  # interleaved, so positions are not in stream order
        for s in range(streams):
            at = T0 + timedelta(seconds=version, microseconds=s)
            e = ev.ActivityRecorded(at=at, count=version, actor="old", reason="activity")
            new = encode(e, correlation_id=f"c-{s}-{version}")
            occurred = (
                new.occurred_at if engine.dialect.name != "sqlite" else new.occurred_at.replace(tzinfo=None)
            )
            rows.append(
                {
                    "stream_id": f"old-{s:03}",
                    "version": version,
                    "type": new.type,
                    "schema_version": new.schema_version,
                    "data": new.data,
                    "meta": new.metadata,
                    "occurred_at": occurred,
                }
            )
    with engine.begin() as conn:
        conn.execute(statement, rows)
    engine.dispose()


def test_the_migration_backfills_a_log_written_before_it(empty_db_url: str) -> None:
    command.upgrade(_config(empty_db_url), "0001")
    # More rows than one backfill page, over more streams than one.
    _old_log(empty_db_url, streams=7, each=800)

    upgrade(empty_db_url)

    assert current(empty_db_url) == "0005"
    store = open_store(empty_db_url)
    try:
        report = verify_chains(store)
        assert (report.ok, report.streams, report.events) == (True, 7, 5600)
        first = store.read_chain(limit=1)[0]
        assert first.hash == chain.event_hash(None, first.event)
        links = store.read_links(0, 2)
        assert links[0].log_hash == chain.log_link(None, links[0].position, links[0].hash or "")
        assert links[1].log_hash == chain.log_link(links[0].log_hash, links[1].position, links[1].hash or "")
        assert store.log_head() == report.head == (5600, store.read_links(5599, 1)[0].log_hash)
        # New appends chain on from the backfilled hashes.
        store.append("old-000", 800, [encode(ev.ActivityRecorded(at=T0, count=1, actor="new", reason="r"))])
        assert verify_chains(store).ok
        engine = sa.create_engine(empty_db_url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM events WHERE stream_id = 'old-003' AND version = 500")
        engine.dispose()
        report = verify_chains(store)
        assert [(b.stream_id, b.version) for b in report.broken] == [("old-003", 500)]
        assert report.log is not None and report.log.position == 499 * 7 + 4 + 1
    finally:
        store.close()
