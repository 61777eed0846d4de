"""The ``sandboxes`` read model of a SQLite log, read with the standard library only.

`sandboxctl ls` and `show` only read rows; importing SQLAlchemy to do so cost most of their time (about
two thirds of `ls` on 1,000 sandboxes). This reader returns exactly what ``SqlEventStore`` returns — the
same ``SandboxRow``s in the same order (a test compares them) — from a read-only connection. Columns are
taken from ``SandboxRow``'s fields, so a column added to both is read without a change here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox_lifecycle.events.records import SandboxRow

_COLUMNS = tuple(f.name for f in fields(SandboxRow))
# Stored as naive UTC text (the store's UtcDateTime on SQLite); read back aware, as the store does.
_TIMES = frozenset(f.name for f in fields(SandboxRow) if "datetime" in str(f.type))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM sandboxes"
_ORDER = " ORDER BY created_at, id"


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _row(values: tuple[Any, ...]) -> SandboxRow:
    named: dict[str, Any] = {
        name: _time(v) if name in _TIMES else v for name, v in zip(_COLUMNS, values, strict=True)
    }
    return SandboxRow(**named)


class SqliteRows:
    """``list_sandboxes`` and ``get_sandbox`` of the SQLite log at ``path``, opened read-only."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def list_sandboxes(self, state: str | None = None) -> list[SandboxRow]:
        if state is None:
            cursor = self._db.execute(_SELECT + _ORDER)
        else:
            cursor = self._db.execute(_SELECT + " WHERE state = ?" + _ORDER, (state,))
        return [_row(values) for values in cursor]

    def get_sandbox(self, sandbox_id: str) -> SandboxRow | None:
        found = self._db.execute(_SELECT + " WHERE id = ?", (sandbox_id,)).fetchone()
        return None if found is None else _row(found)

    def close(self) -> None:
        self._db.close()
