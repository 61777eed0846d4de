"""Verifying the hash chain of the event log: which streams were tampered with, and from which version.

Each stream is read in version order and its chain recomputed (events/chain.py). The first version
whose stored hash differs from the recomputed one, or that is missing, or that has no hash, breaks the
stream: an edited event (its content no longer hashes to its hash), a deleted one (a version gap), an
inserted or reordered one (content at a place it was not hashed for). Events deleted from a stream's
end leave no gap; the read model, written in the same transaction as every append, still holds the
version the stream had, so a log ending before it is reported too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.events.chain import event_hash
from sandbox_lifecycle.events.records import ChainedEvent, CorruptStream

PAGE = 1000


@dataclass(frozen=True, slots=True)
class BrokenChain:
    """A stream whose history cannot be trusted from ``version`` on."""

    stream_id: str
    version: int
    detail: str

    def __str__(self) -> str:
        return f"stream {self.stream_id!r}: chain broken at version {self.version}: {self.detail}"


@dataclass(slots=True)
class AuditReport:
    streams: int = 0
    events: int = 0
    broken: list[BrokenChain] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken


class _Stream:
    """The chain of the stream being read: the next version expected and the hash it chains to."""

    def __init__(self, stream_id: str) -> None:
        self.id = stream_id
        self.next_version = 1
        self.previous: str | None = None
        self.broken = False


def _check(stream: _Stream, item: ChainedEvent) -> BrokenChain | None:
    event, stored = item
    expected = stream.next_version
    stream.next_version = event.version + 1
    if event.version != expected:
        return BrokenChain(
            stream.id,
            expected,
            f"version {expected} is missing (deleted, or moved): the stream goes from {expected - 1} "
            f"to {event.version}",
        )
    if stored is None:
        return BrokenChain(stream.id, expected, "the event has no hash (written behind the store's back)")
    if stored != event_hash(stream.previous, event):
        return BrokenChain(
            stream.id,
            expected,
            "the event does not match its hash: edited, or inserted or moved here from another place",
        )
    stream.previous = stored
    return None


def verify_chains(store: EventStore, page: int = PAGE, *, ends: bool = True) -> AuditReport:
    """Every stream's chain, recomputed; ``broken`` names each bad stream once, at its first bad version.

    ``ends`` also compares each stream's last version with its read-model row (``replay --verify``
    turns it off: its projection comparison reports that difference already).
    """
    report = AuditReport()
    last_versions: dict[str, int] = {}
    stream: _Stream | None = None
    after: tuple[str, int] = ("", 0)
    size = page
    while True:
        try:
            items = store.read_chain(after, size)
        except CorruptStream as exc:
            if size > 1:
                size = 1  # read up to the unreadable row one at a time, so no other row is skipped
                continue
            if stream is None or stream.id != exc.stream_id:
                stream = _Stream(exc.stream_id)
                report.streams += 1
            if not stream.broken:
                report.broken.append(BrokenChain(exc.stream_id, exc.version, f"unreadable: {exc.detail}"))
                stream.broken = True
            last_versions[exc.stream_id] = exc.version
            after, size = (exc.stream_id, exc.version), page
            continue
        if not items:
            break
        for item in items:
            event = item.event
            if stream is None or stream.id != event.stream_id:
                stream = _Stream(event.stream_id)
                report.streams += 1
            report.events += 1
            last_versions[event.stream_id] = event.version
            if not stream.broken and (problem := _check(stream, item)) is not None:
                report.broken.append(problem)
                stream.broken = True
        after = (items[-1].event.stream_id, items[-1].event.version)
    if ends:
        _check_ends(store, last_versions, report)
    report.broken.sort(key=lambda b: b.stream_id)
    return report


def _check_ends(store: EventStore, last_versions: dict[str, int], report: AuditReport) -> None:
    """Streams cut short at their end: the read model is at a version the log no longer reaches."""
    named = {b.stream_id for b in report.broken}
    for row in store.list_sandboxes():
        last = last_versions.get(row.id, 0)
        if row.version > last and row.id not in named:
            report.broken.append(
                BrokenChain(
                    row.id,
                    last + 1,
                    f"the log ends at version {last} but the read model has the sandbox at version "
                    f"{row.version}: events were deleted from its end (or the read model was altered)",
                )
            )
