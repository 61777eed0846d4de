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
        case "UsageRecorded":
            return f"UsageRecorded {usage_summary(data)}"
    return str(entry.type)


def usage_summary(data: Any) -> str:
    """A run's usage in one short line: ``cpu=1.31s mem=64.2MB in=3.0MB out=125B model=3 tok=194/17``;
    a number not measured shows as ``?`` (never as 0)."""

    def size(n: object) -> str:
        if not isinstance(n, int):
            return "?"
        return f"{n}B" if n < 1000 else f"{n / 1000:.1f}kB" if n < 1_000_000 else f"{n / 1_000_000:.1f}MB"

    def known(n: object, fmt: str = "{}") -> str:
        return "?" if n is None else fmt.format(n)

    return (
        f"cpu={known(data.get('cpu_seconds'), '{:.2f}s')} mem={size(data.get('memory_peak_bytes'))} "
        f"in={size(data.get('egress_bytes_in'))} out={size(data.get('egress_bytes_out'))} "
        f"model={known(data.get('model_requests'))} "
        f"tok={known(data.get('model_input_tokens'))}/{known(data.get('model_output_tokens'))}"
    )
