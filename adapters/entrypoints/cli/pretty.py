"""What a person at a terminal sees: rich tables, a timeline, progress bars.

Imported only when stdout (or, for progress, stderr) is a terminal and --json was not asked for: rich
costs tens of milliseconds to import, and scripts reading the plain output must get it unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from sandbox_lifecycle.adapters.entrypoints.cli.row_values import event_label, row_json
from sandbox_lifecycle.adapters.observability import progress
from sandbox_lifecycle.events.records import SandboxRow

# State colours: live ones green, in-between ones yellow, suspended blue, gone dim.
_STATE_STYLE = {
    "idle": "green",
    "running": "bold green",
    "suspended": "blue",
    "expired": "dim",
    "creating": "yellow",
    "suspending": "yellow",
    "resuming": "yellow",
    "destroying": "yellow",
}


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def print_rows(rows: Sequence[SandboxRow]) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("ID", "left"), ("KIND", "left"), ("STATE", "left"), ("VER", "right")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("LAST ACTIVITY", no_wrap=True)
    table.add_column("CONVERSATION", overflow="fold")
    for r in rows:
        table.add_row(
            r.id,
            r.kind,
            Text(r.state, style=_STATE_STYLE.get(r.state, "")),
            str(r.version),
            _when(r.last_activity_at),
            r.conversation_id or "-",
        )
    Console().print(table)
    if not rows:
        Console().print("[dim]no sandboxes[/dim]")


def print_row(row: SandboxRow) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in row_json(row).items():
        shown: Any = "-" if value is None else str(value)
        if key == "state":
            shown = Text(str(value), style=_STATE_STYLE.get(str(value), ""))
        table.add_row(key, shown)
    Console().print(table)


def print_history(entries: Sequence[Any]) -> None:
    """One line per event down a time axis: a dot where the state moved, the time and the gap since
    the previous event, what happened, the move, why and by whom."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("", style="cyan", no_wrap=True)
    table.add_column("TIME", no_wrap=True)
    table.add_column("+", justify="right", style="dim", no_wrap=True)
    for name in ("EVENT", "FROM → TO", "REASON", "ACTOR"):
        table.add_column(name, overflow="fold")
    previous: datetime | None = None
    for e in entries:
        moved = e.from_state != e.to_state
        gap = f"{(e.occurred_at - previous).total_seconds():.3f}s" if previous is not None else ""
        previous = e.occurred_at
        move = Text(f"{e.from_state} → {e.to_state}" if moved else e.to_state)
        move.stylize(_STATE_STYLE.get(e.to_state, ""))
        table.add_row(
            "●" if moved else "│",
            e.occurred_at.isoformat(timespec="milliseconds"),
            gap,
            event_label(e),
            move,
            e.reason,
            e.actor,
        )
    Console().print(table)


@contextmanager
def bar(label: str, total: int | None) -> Iterator[None]:
    """A transient progress bar on stderr, fed by sandbox_lifecycle.adapters.observability.progress."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as shown:
        task = shown.add_task(label, total=total)
        with progress.reporting(lambda n: shown.advance(task, n)):
            yield
