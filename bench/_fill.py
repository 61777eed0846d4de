"""Bulk-loading helpers for the benchmarks: realistic logs written fast, outside the timed part."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sandbox_lifecycle.events.records import NewEvent
from sandbox_lifecycle.events.tables import events as events_table


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


@contextmanager
def private_pg_schema(base_url: str, prefix: str) -> Iterator[str]:
    """A fresh schema on the server of ``base_url``; yields a URL using it, drops it afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sa.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def memory_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc.

    VmHWM rather than getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child
    started by a big parent would report the parent's peak as its own.
    """
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]
