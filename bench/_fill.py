"""Bulk-loading helpers for the benchmarks: realistic logs written fast, outside the timed part."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from events.records import NewEvent
from events.tables import events as events_table


def bulk_insert(url: str, streams: Iterable[tuple[str, list[NewEvent]]], batch: int = 20_000) -> int:
    """Insert whole streams (versions 1..n) in large batches; returns the number of events written."""
    engine = sa.create_engine(url)
    rows: list[dict[str, Any]] = []
    written = 0
    with engine.begin() as conn:
        for sid, stream in streams:
            for version, e in enumerate(stream, start=1):
                rows.append(
                    {
                        "stream_id": sid,
                        "version": version,
                        "type": e.type,
                        "schema_version": e.schema_version,
                        "data": e.data,
                        "meta": e.metadata,
                        "occurred_at": e.occurred_at,
                        "idempotency_key": None,
                    }
                )
            if len(rows) >= batch:
                conn.execute(events_table.insert(), rows)
                written += len(rows)
                rows.clear()
        if rows:
            conn.execute(events_table.insert(), rows)
            written += len(rows)
    engine.dispose()
    return written


def reset_pg(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS events, sandboxes, sandbox_deadlines, alembic_version")
    engine.dispose()
