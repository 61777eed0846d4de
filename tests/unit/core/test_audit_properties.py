"""Property: any single edit, deletion, insertion or truncation of the log is found by `audit verify`,
on a migrated SQLite file (the schema the CLI runs on), as docs/audit.md states it:

- an edit of any column of any event, a deletion of any event, an inserted row (at any position, even
  below 1 with the CHECK turned off, with the stream hash the chain wants): found with no head;
- events cut from the end with the head row rewritten to match: found with a head taken before.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_lifecycle.core.audit import Anchor, verify_chains
from sandbox_lifecycle.events import chain
from sandbox_lifecycle.events.records import NewEvent
from sandbox_lifecycle.events.store import SqlEventStore, open_store

_COLUMNS = (
    "stream_id",
    "version",
    "type",
    "schema_version",
    "data",
    "meta",
    "occurred_at",
    "idempotency_key",
    "hash",
    "log_hash",
)
_AT = datetime(2026, 12, 1, tzinfo=UTC)


def _log(path: Path, streams: list[int]) -> SqlEventStore:
    """A log of len(streams) appends: append i goes to stream s{streams[i]}, the first with a key."""
    store = open_store(f"sqlite:///{path}")
    versions: dict[str, int] = {}
    for i, s in enumerate(streams):
        sid = f"s{s}"
        e = NewEvent(type="Touched", data={"i": i}, occurred_at=_AT, metadata={"actor": "api"})
        store.append(sid, versions.get(sid, 0), [e], idempotency_key=f"k{i}" if i % 3 == 0 else None)
        versions[sid] = versions.get(sid, 0) + 1
    return store


def _edited(column: str, value: object) -> object:
    """A different value of the column's kind."""
    if column in ("version", "schema_version"):
        return int(value) + 7  # type: ignore[call-overload]
    if column in ("data", "meta"):
        return orjson.dumps({**orjson.loads(str(value)), "edited": True}).decode()
    if column == "occurred_at":
        return "2027-01-01 00:00:00.000000"
    return "edited" if value is None else f"{value}x"


_appends = st.lists(st.integers(0, 2), min_size=2, max_size=7)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=_appends, pick=st.integers(0, 100), column=st.sampled_from(_COLUMNS))
def test_any_single_edit_is_found(
    appends: list[int], pick: int, column: str, migrated_sqlite_template: Path, tmp_path: Path
) -> None:
    db = _copy(migrated_sqlite_template, tmp_path)
    store = _log(db, appends)
    position = pick % len(appends) + 1
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute(f"SELECT {column} FROM events WHERE position = ?", (position,)).fetchone()
        conn.execute(f"UPDATE events SET {column} = ? WHERE position = ?", (_edited(column, value), position))
    assert not verify_chains(store).ok, (column, position)
    store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=_appends, pick=st.integers(0, 100))
def test_any_single_deletion_is_found(
    appends: list[int], pick: int, migrated_sqlite_template: Path, tmp_path: Path
) -> None:
    db = _copy(migrated_sqlite_template, tmp_path)
    store = _log(db, appends)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position = ?", (pick % len(appends) + 1,))
    assert not verify_chains(store, ends=False).ok
    store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=_appends, stream=st.integers(0, 3), position=st.integers(-3, 12))
def test_any_inserted_event_is_found(
    appends: list[int], stream: int, position: int, migrated_sqlite_template: Path, tmp_path: Path
) -> None:
    """A forged event at the end of a stream (or a new one), with the stream hash the chain wants and
    the log hash that chains to the row before it: the position after it, or the head row, breaks."""
    db = _copy(migrated_sqlite_template, tmp_path)
    store = _log(db, appends)
    sid = f"s{stream}"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")  # the attacker's own connection
        if conn.execute("SELECT 1 FROM events WHERE position = ?", (position,)).fetchone():
            conn.execute("DELETE FROM events WHERE position = ?", (position,))  # and replace a row
        found = conn.execute(
            "SELECT version, hash FROM events WHERE stream_id = ? ORDER BY version DESC LIMIT 1", (sid,)
        ).fetchone()
        version, previous = found or (0, None)
        forged = NewEvent(type="Forged", data={}, occurred_at=_AT, metadata={"actor": "mallory"})
        (h,) = chain.hashes(previous, sid, version, [forged])
        before = conn.execute(
            "SELECT log_hash FROM events WHERE position < ? ORDER BY position DESC LIMIT 1", (position,)
        ).fetchone()
        conn.execute(
            "INSERT INTO events (position, stream_id, version, type, schema_version, data, meta, "
            "occurred_at, hash, log_hash) VALUES (?, ?, ?, 'Forged', 1, '{}', '{\"actor\":\"mallory\"}', "
            "'2026-12-01 00:00:00.000000', ?, ?)",
            (position, sid, version + 1, h, chain.log_link(before[0] if before else None, position, h)),
        )
    assert not verify_chains(store, ends=False).ok
    store.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=_appends, keep=st.integers(0, 100))
def test_a_truncation_with_the_head_row_rewritten_is_found_with_a_head(
    appends: list[int], keep: int, migrated_sqlite_template: Path, tmp_path: Path
) -> None:
    db = _copy(migrated_sqlite_template, tmp_path)
    store = _log(db, appends)
    anchor = Anchor(*verify_chains(store).head)
    kept = keep % len(appends)  # events left: 0 .. n-1
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position > ?", (kept,))
        last = conn.execute("SELECT log_hash FROM events WHERE position = ?", (kept,)).fetchone()
        conn.execute(
            "UPDATE log_head SET position = ?, hash = ? WHERE id = 1", (kept, last[0] if last else "")
        )
    report = verify_chains(store, ends=False, anchor=anchor)
    assert report.anchor_problem is not None
    store.close()


def _copy(template: Path, tmp_path: Path) -> Path:
    # Hypothesis reuses the function's tmp_path across examples: a fresh file for each.
    n = len(list(tmp_path.glob("*.db")))
    db = tmp_path / f"log-{n}.db"
    shutil.copyfile(template, db)
    return db
