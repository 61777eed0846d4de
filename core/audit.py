"""Verifying the hash chain of the event log: which streams were tampered with, and from which version.

Each stream is read in version order and its chain recomputed (events/chain.py). The first version
whose stored hash differs from the recomputed one, or that is missing, or that has no hash, breaks the
stream: an edited event (its content no longer hashes to its hash), a deleted one (a version gap), an
inserted or reordered one (content at a place it was not hashed for). Events deleted from a stream's
end leave no gap; the read model, written in the same transaction as every append, still holds the
version the stream had, so a log ending before it is reported too.

The streams' chains cannot show what needs no hash work: a whole stream deleted with its rows, a stream
cut short with its row set to match, a stream's last event edited with its own hash recomputed. The log's
chain over the global position does (events/chain.py ``log_link``): it is recomputed in position order,
and the first position that does not chain to the event before it is named. The head row (the position
and log hash of the last event, written by every append) shows events cut from the end of the log; a
head signed and kept outside the database (``anchor``) shows them even when the head row was rewritten.

The two passes must cover the same rows: the log's pass reads every row whatever its position (one at
0 or below, which the schema refuses but an attacker can write after dropping the CHECK, is named), and
the count of the rows the streams' pass read up to the log's last position must equal the log's. A row
that cannot be read as an event (crafted types, text that is not UTF-8, JSON the parser refuses) is
named with its stream and version, and every other row is still checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.events.chain import event_hash, log_link
from sandbox_lifecycle.events.records import ChainedEvent

PAGE = 1000


@dataclass(frozen=True, slots=True)
class BrokenChain:
    """A stream whose history cannot be trusted from ``version`` on."""

    stream_id: str
    version: int
    detail: str

    def __str__(self) -> str:
        return f"stream {self.stream_id!r}: chain broken at version {self.version}: {self.detail}"


@dataclass(frozen=True, slots=True)
class LogBreak:
    """The log cannot be trusted from ``position`` on: the first place its chain over positions fails."""

    position: int
    detail: str

    def __str__(self) -> str:
        return f"the log's chain broken at position {self.position}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head kept outside the database: the log hash of the event at ``position`` when it was taken."""

    position: int
    log_hash: str


@dataclass(slots=True)
class AuditReport:
    streams: int = 0
    events: int = 0
    broken: list[BrokenChain] = field(default_factory=list)
    # The first break of the log's chain (or of its head), None when whole.
    log: LogBreak | None = None
    # The last event's position and log hash as recomputed: what a head signed now would hold.
    head: tuple[int, str] = (0, "")
    # With an anchor: None when the log holds everything up to it unchanged, else why not.
    anchor_problem: str | None = None

    # How many rows, and the sum of their positions, the log's pass read: the streams' pass must match.
    log_rows: tuple[int, int] = (0, 0)

    @property
    def ok(self) -> bool:
        return not self.broken and self.log is None and self.anchor_problem is None


class _Stream:
    """The chain of the stream being read: the next version expected and the hash it chains to."""

    def __init__(self, stream_id: str) -> None:
        self.id = stream_id
        self.next_version = 1
        self.previous: str | None = None
        self.broken = False


def _shown(value: object) -> str:
    """A stream id as it can be printed and put in JSON, whatever a crafted row holds."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check(stream: _Stream, item: ChainedEvent) -> BrokenChain | None:
    event, stored, _ = item
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


def verify_chains(
    store: EventStore, page: int = PAGE, *, ends: bool = True, anchor: Anchor | None = None
) -> AuditReport:
    """Every stream's chain and the log's chain, recomputed; ``broken`` names each bad stream once, at
    its first bad version, and ``log`` the first position the log's chain fails at.

    ``ends`` also compares each stream's last version with its read-model row (``replay --verify``
    turns it off: its projection comparison reports that difference already). ``anchor``: a head kept
    elsewhere, which the log must still reach unchanged (``anchor_problem`` says how it does not).
    """
    report = AuditReport()
    verify_log(store, report, page, anchor)
    last_position = report.head[0]
    last_versions: dict[str, int] = {}
    stream: _Stream | None = None
    after: tuple[object, object] = ("", 0)
    # The rows up to the log pass's last position: an append committed since is in this pass only.
    covered, position_sum = 0, 0
    while items := store.read_chain(after, page):
        for item in items:
            event = item.event
            if stream is None or stream.id != event.stream_id:
                stream = _Stream(event.stream_id)
                report.streams += 1
            if event.position <= last_position:
                covered += 1
                position_sum += event.position
            if item.problem is not None:
                if type(event.version) is int:
                    last_versions[event.stream_id] = event.version
                if not stream.broken:
                    version = event.version if type(event.version) is int else stream.next_version
                    report.broken.append(
                        BrokenChain(_shown(event.stream_id), version, f"unreadable: {item.problem}")
                    )
                    stream.broken = True
                continue
            report.events += 1  # the events checked: an unreadable row is named, not counted
            last_versions[event.stream_id] = event.version
            if not stream.broken and (problem := _check(stream, item)) is not None:
                report.broken.append(problem)
                stream.broken = True
        after = (items[-1].event.stream_id, items[-1].event.version)
    if (covered, position_sum) != report.log_rows and report.log is None:
        report.log = LogBreak(
            last_position,
            f"the streams hold {covered} event(s) up to position {last_position}, the log's chain "
            f"{report.log_rows[0]}: rows outside the log's chain (written behind the store's back)",
        )
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


def verify_log(
    store: EventStore, report: AuditReport, page: int = PAGE, anchor: Anchor | None = None
) -> None:
    """The log's chain in position order, its head row and, with one, a head kept elsewhere."""
    previous: str | None = None
    last = 0
    rows, position_sum = 0, 0
    anchored = anchor is None or anchor.position == 0
    if anchor is not None and anchor.position == 0 and anchor.log_hash:
        report.anchor_problem = "an anchor at position 0 must have an empty hash"
    after: int | None = None  # the first page starts at the first row, whatever its position
    while links := store.read_links(after, page):
        for position, stream_hash, log_hash, key in links:
            rows += 1
            position_sum += position
            if report.log is None and position <= 0:
                report.log = LogBreak(
                    position,
                    "an event at a position below 1, where the store never writes and the feed never "
                    "shows one: written behind the store's back (after dropping the position CHECK)",
                )
            if report.log is None and log_hash != _expected_link(previous, position, stream_hash, key):
                detail = (
                    "the event has no log hash (written behind the store's back)"
                    if log_hash is None
                    else f"the event does not chain to the one before it (position {last}): an event "
                    "before it was deleted, inserted or edited, or this one (or its idempotency key) "
                    "was edited or moved"
                )
                report.log = LogBreak(position, detail)
            if anchor is not None and not anchored and position >= anchor.position:
                anchored = True
                if position != anchor.position:
                    report.anchor_problem = (
                        f"the anchor's event at position {anchor.position} is gone (the log goes from "
                        f"{last} to {position})"
                    )
                elif log_hash != anchor.log_hash or report.log is not None:
                    report.anchor_problem = f"the log no longer reaches the anchor: position {position} " + (
                        f"is after a break at position {report.log.position}"
                        if report.log is not None and report.log.position < position
                        else "does not hash to the anchor's hash"
                    )
            previous, last = log_hash, position
        after = last
    report.head = (last, previous or "")
    report.log_rows = (rows, position_sum)
    if not anchored and anchor is not None:
        report.anchor_problem = (
            f"the log ends at position {last}, before the anchor's position {anchor.position}: "
            "events were cut from its end"
        )
    _check_head_row(store, report)


def _expected_link(
    previous: str | None, position: int, stream_hash: str | None, key: str | None
) -> str | None:
    """The log hash the event should have; None when a crafted row's text cannot even be hashed."""
    try:
        return log_link(previous, position, stream_hash or "", key)
    except UnicodeEncodeError:  # text that was not UTF-8 (SQLite keeps what it is given)
        return None


def _check_head_row(store: EventStore, report: AuditReport) -> None:
    """The head row names the last event the store appended: a log that ends elsewhere was cut."""
    if report.log is not None:
        return
    row = store.log_head()
    last, log_hash = report.head
    if row is None:
        report.log = LogBreak(last, "the log's head row is gone (deleted behind the store's back)")
    elif row != (last, log_hash):
        report.log = LogBreak(
            min(row[0], last) + (1 if row[0] > last else 0),
            f"the head row has the log ending at position {row[0]}, its last event is at position "
            f"{last}: events were cut from the end of the log (or the head row was altered)",
        )
