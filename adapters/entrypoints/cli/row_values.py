"""A sandbox's row as plain values, field by field: what both the plain output (``render``) and the rich
tables (``pretty``) show, and what --json prints."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from sandbox_lifecycle.events.records import SandboxRow

_ROW_FIELDS = tuple(f.name for f in fields(SandboxRow))


def row_json(row: SandboxRow) -> dict[str, Any]:
    # Field by field rather than asdict(), whose deep copy of every value was most of `ls` on many rows.
    out = {name: getattr(row, name) for name in _ROW_FIELDS}
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out
