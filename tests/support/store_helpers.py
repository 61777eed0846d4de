"""Builders and process workers shared by the store tests (workers must be importable for spawn)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from sandbox_lifecycle.events.records import ConcurrencyError, Deadline, NewEvent, Projection, SandboxRow
from sandbox_lifecycle.events.store import open_store

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def event(type_: str = "Touched", n: int = 0, at: datetime = T0) -> NewEvent:
    return NewEvent(
        type=type_, data={"n": n, "nested": {"list": [1, "two"]}}, occurred_at=at, metadata={"actor": "t"}
    )


def row(
    sandbox_id: str,
    *,
    conversation_id: str | None = None,
    kind: str = "data-app",
    state: str = "running",
    version: int = 1,
) -> SandboxRow:
    return SandboxRow(
        id=sandbox_id,
        kind=kind,
        provider="docker",
        state=state,
        version=version,
        conversation_id=conversation_id,
        provider_ref=f"ref-{sandbox_id}",
        snapshot_key=None,
        snapshot_sha256=None,
        snapshot_bytes=None,
        last_activity_at=T0,
        state_since=T0,
        created_at=T0,
    )


def projection(r: SandboxRow, *deadlines: tuple[str, datetime]) -> Projection:
    return Projection(r, tuple(Deadline(r.id, kind, due, r.version) for kind, due in deadlines))


def pg_url_in_schema(base_url: str, schema: str) -> str:
    """The URL whose connections use ``schema`` (search_path), so tests never touch ``public``."""
    url = sa.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    """A fresh, empty schema; yields a URL that uses it and drops the schema afterwards."""
    schema = f"store_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield pg_url_in_schema(base_url, schema)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def race_append(url: str, stream_id: str, expected_version: int, barrier: Any, results: Any, n: int) -> None:
    """Process worker: wait for every racer, append once, report ``won`` / ``conflict`` / an error."""
    store = open_store(url)
    try:
        store.read_stream(stream_id)  # connect before the start line, so the race is about the append
        barrier.wait(timeout=60)
        try:
            store.append(stream_id, expected_version, [event(n=n)])
            results.put("won")
        except ConcurrencyError:
            results.put("conflict")
        except Exception as exc:
            results.put(f"error: {exc!r}")
    finally:
        store.close()
