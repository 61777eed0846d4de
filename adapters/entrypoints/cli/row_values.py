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


def event_label(entry: Any) -> str:
    """An event's type, with the lineage it records (a fork's source and version, a source's fork, a
    rewind's target), so `history` shows both ends of a fork."""
    data = entry.data
    match entry.type:
        case "ForkedFrom":
            return f"ForkedFrom {data.get('source_id')}@{data.get('source_version')}"
        case "Forked":
            return f"Forked {data.get('fork_id')}@{data.get('at_version')}"
        case "Rewound":
            return f"Rewound to {data.get('to_version')}"
        case "CheckpointCollected":
            return f"CheckpointCollected {data.get('checkpoint_version')}"
    return str(entry.type)
