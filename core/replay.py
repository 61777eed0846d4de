"""Replay of the log: per-sandbox history, and verification/rebuild of the stored projections."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import chain

from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.projection import Policy, project
from sandbox_lifecycle.core.sandbox import Sandbox, evolve, initial
from sandbox_lifecycle.events.codec import decode
from sandbox_lifecycle.events.records import Deadline, Projection, RecordedEvent, SandboxRow


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    type: str
    occurred_at: datetime
    from_state: str
    to_state: str
    reason: str
    actor: str
    data: dict[str, object]


def history(sandbox_id: str, records: Iterable[RecordedEvent]) -> list[HistoryEntry]:
    state = initial(sandbox_id)
    out: list[HistoryEntry] = []
    for record in records:
        event = decode(record)
        after = evolve(state, event)
        out.append(
            HistoryEntry(
                version=record.version,
                type=record.type,
                occurred_at=record.occurred_at,
                from_state=state.status,
                to_state=after.status,
                reason=event.reason,
                actor=event.actor,
                data=dict(record.data),
            )
        )
        state = after
    return out


def fold_streams(records: Iterable[RecordedEvent]) -> Iterator[Sandbox]:
    """Fold records grouped by stream, each stream in version order (``read_streams``): every
    sandbox's final state, one at a time. The state is carried along, never looked up."""
    it = iter(records)
    head = next(it, None)
    if head is None:
        return
    sid = head.stream_id
    state = evolve(initial(sid), decode(head))
    for record in it:
        if record.stream_id != sid:
            yield state
            sid = record.stream_id
            state = initial(sid)
        state = evolve(state, decode(record))
    yield state


def iter_streams(
    store: EventStore, first: str = "", before: str | None = None, batch: int = 10_000
) -> Iterator[RecordedEvent]:
    """Every event of the streams from ``first`` up to ``before`` (excluded), by (stream id, version)."""

    def pages() -> Iterator[list[RecordedEvent]]:
        after = (first, 0)  # versions start at 1: the whole of stream ``first``
        while chunk := store.read_streams(after=after, before=before, limit=batch):
            yield chunk
            last = chunk[-1]
            after = (last.stream_id, last.version)

    # Flattened in C: a generator re-yielding each event costs a frame switch per event.
    return chain.from_iterable(pages())


def rebuild(
    store: EventStore, policy: Policy, first: str = "", before: str | None = None
) -> list[Projection]:
    """The projections of the sandboxes from ``first`` up to ``before`` (default: all), from the log alone."""
    return [project(state, policy) for state in fold_streams(iter_streams(store, first, before))]


def _row_diff(expected: SandboxRow | None, actual: SandboxRow | None, sid: str) -> list[str]:
    if expected is None:
        return [f"{sid}: read model has a row the log does not explain"]
    if actual is None:
        return [f"{sid}: read model row missing (log says state={expected.state} v{expected.version})"]
    diffs = []
    for field in (f.name for f in fields(SandboxRow)):
        want, got = getattr(expected, field), getattr(actual, field)
        if want != got:
            diffs.append(f"{sid}: {field} is {got!r} in the read model, {want!r} from the log")
    return diffs


def verify(store: EventStore, policy: Policy, rebuilt: Iterable[Projection] | None = None) -> list[str]:
    """Every difference between the stored projections and a rebuild from the log (empty = clean)."""
    expected = {p.row.id: p for p in (rebuild(store, policy) if rebuilt is None else rebuilt)}
    actual_rows = {row.id: row for row in store.list_sandboxes()}
    actual_deadlines: dict[str, set[tuple[str, datetime, int]]] = {}
    for d in store.all_deadlines():
        actual_deadlines.setdefault(d.sandbox_id, set()).add((d.kind, d.due_at, d.version))
    diffs: list[str] = []
    for sid in sorted(expected.keys() | actual_rows.keys()):
        proj = expected.get(sid)
        diffs += _row_diff(proj.row if proj else None, actual_rows.get(sid), sid)
        want = {_key(d) for d in proj.deadlines} if proj else set()
        got = actual_deadlines.pop(sid, set())
        for kind, due, version in sorted(want - got):
            diffs.append(f"{sid}: {kind} deadline {due.isoformat()} (v{version}) missing")
        for kind, due, version in sorted(got - want):
            diffs.append(f"{sid}: {kind} deadline {due.isoformat()} (v{version}) not explained by the log")
    for sid in sorted(actual_deadlines):
        diffs.append(f"{sid}: deadlines armed for a sandbox the log does not know")
    return diffs


def _key(d: Deadline) -> tuple[str, datetime, int]:
    return (d.kind, d.due_at, d.version)
