"""How the CLI shows rows, histories and sweep reports: tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sandbox_lifecycle.adapters.entrypoints.cli.row_values import event_label, row_json
from sandbox_lifecycle.events.records import SandboxRow

__all__ = ["for_a_person", "print_history", "print_report", "print_row", "print_rows", "row_json"]


def _print_json(value: Any) -> None:
    """json.dumps(value, indent=2)'s layout, by orjson: the json module indents in pure Python, which
    was a third of `ls --json` on a thousand rows. Text outside ASCII is written as UTF-8, not escaped."""
    # Imported here: orjson loads uuid and platform, which a table or an exec does not need
    # (tests/integration/adapters/entrypoints/cli/test_imports.py).
    import orjson

    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def for_a_person() -> bool:
    """Output goes to a terminal: rich tables (cli/pretty.py) instead of the plain text that
    scripts and pipes get unchanged."""
    return sys.stdout.isatty()


def print_rows(rows: Sequence[SandboxRow], as_json: bool) -> None:
    if as_json:
        _print_json([row_json(r) for r in rows])
        return
    if for_a_person():
        # Imported here: rich costs tens of milliseconds, paid only when a person reads a terminal.
        import sandbox_lifecycle.adapters.entrypoints.cli.pretty as pretty

        pretty.print_rows(rows)
        return
    print(f"{'ID':16}  {'KIND':12}  {'STATE':10}  {'VER':>4}  {'LAST ACTIVITY':25}  CONVERSATION")
    for r in rows:
        last = r.last_activity_at.isoformat(timespec="seconds") if r.last_activity_at else "-"
        print(f"{r.id:16}  {r.kind:12}  {r.state:10}  {r.version:>4}  {last:25}  {r.conversation_id or '-'}")


def print_row(row: SandboxRow, as_json: bool) -> None:
    if as_json:
        _print_json(row_json(row))
        return
    if for_a_person():
        # Imported here: rich costs tens of milliseconds, paid only when a person reads a terminal.
        import sandbox_lifecycle.adapters.entrypoints.cli.pretty as pretty

        pretty.print_row(row)
        return
    for key, value in row_json(row).items():
        print(f"{key:17} {value if value is not None else '-'}")


def print_history(entries: Sequence[Any]) -> None:
    if for_a_person():
        # Imported here: rich costs tens of milliseconds, paid only when a person reads a terminal.
        import sandbox_lifecycle.adapters.entrypoints.cli.pretty as pretty

        pretty.print_history(entries)
        return
    print(f"{'VER':>4}  {'TIME':29}  {'EVENT':20}  {'FROM → TO':26}  {'REASON':14}  ACTOR")
    for e in entries:
        move = f"{e.from_state} → {e.to_state}" if e.from_state != e.to_state else e.to_state
        when = e.occurred_at.isoformat(timespec="milliseconds")
        print(f"{e.version:>4}  {when:29}  {event_label(e):20}  {move:26}  {e.reason:14}  {e.actor}")


def print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(report), indent=2))
        return
    for label, items in (
        ("fired", report.fired),
        ("recovered", report.recovered),
        ("removed", report.removed),
        ("warned", report.warned),
    ):
        for item in items:
            print(f"{label}: {item}")
    for err in report.errors:
        print(f"error: {err}", file=sys.stderr)
    if not (report.fired or report.recovered or report.removed or report.warned or report.errors):
        print("nothing to do")
