"""Records the event store reads and writes. No domain logic lives here."""

from __future__ import annotations

from dataclasses import field
from datetime import datetime
from typing import Any, NamedTuple

from sandbox_lifecycle.events.values import FieldValues, value_class

JSON = dict[str, Any]


class StoreError(Exception):
    """Base class of every error the event store raises."""


class ConcurrencyError(StoreError):
    """Another writer appended to the stream (or claimed the conversation) first.

    The caller reloads and decides again; usually there is nothing left to do.
    """

    def __init__(self, stream_id: str, expected_version: int, detail: str = "") -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        msg = f"stream {stream_id!r} is no longer at version {expected_version}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class CorruptStream(StoreError):
    """A stream in the log cannot be read as written: a malformed event, or a version missing from it.

    Names the stream and the first bad version, so one bad sandbox is reported without stopping work on
    the others.
    """

    def __init__(self, stream_id: str, version: int, detail: str) -> None:
        self.stream_id = stream_id
        self.version = version
        self.detail = detail
        super().__init__(f"stream {stream_id!r} is corrupt at version {version}: {detail}")

    def __reduce__(self) -> tuple[type[CorruptStream], tuple[str, int, str]]:
        return (type(self), (self.stream_id, self.version, self.detail))


class DatabaseLocked(StoreError):
    """The embedded SQLite database is held by another writer for longer than the busy timeout."""


@value_class
class NewEvent(FieldValues):
    """An event ready to be appended: already encoded to JSON-able data."""

    type: str
    data: JSON
    occurred_at: datetime
    schema_version: int = 1
    metadata: JSON = field(default_factory=dict)


class RecordedEvent(NamedTuple):
    """An event as stored: ``position`` is global commit order, ``version`` is per stream (1-based).

    A NamedTuple because the feed is read a million rows at a time: building one is several times
    cheaper than a frozen dataclass.
    """

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: JSON
    metadata: JSON
    occurred_at: datetime


@value_class
class SandboxRow(FieldValues):
    """The ``sandboxes`` read model: one row per sandbox, the fold of its stream."""

    id: str
    kind: str
    provider: str
    state: str
    version: int
    conversation_id: str | None
    provider_ref: str | None
    snapshot_key: str | None
    snapshot_sha256: str | None
    snapshot_bytes: int | None
    last_activity_at: datetime | None
    state_since: datetime
    created_at: datetime
    expired_reason: str | None = None


@value_class
class Deadline(FieldValues):
    """An armed timer of a sandbox. ``kind`` is ``idle``, ``retention`` or ``lease``."""

    sandbox_id: str
    kind: str
    due_at: datetime
    version: int


@value_class
class Projection(FieldValues):
    """What the store writes beside the events, in the same transaction.

    ``deadlines`` replaces every deadline of the sandbox (an empty tuple disarms them all).
    """

    row: SandboxRow
    deadlines: tuple[Deadline, ...] = ()


@value_class
class AppendResult(FieldValues):
    """``duplicate`` is true when the idempotency key had been used and nothing was written."""

    stream_id: str
    version: int
    last_position: int
    duplicate: bool = False


@value_class
class CapacityLimit(FieldValues):
    """A ceiling the append must keep: at most ``limit`` sandboxes (of ``kind`` only, when set) whose
    read-model state is one of ``states``, counting the appended sandbox.

    The store checks it in the append's own transaction, under the lock every append takes, so two
    replicas can never both take the last slot. The caller names the states; the store knows none.
    """

    states: tuple[str, ...]
    limit: int
    kind: str | None = None
    # States counted only for rows with a provider ref (an instance the provider still holds).
    states_with_ref: tuple[str, ...] = ()


class CapacityRefused(StoreError):
    """The append would have put more sandboxes in the limit's states than it allows; nothing was written."""

    def __init__(self, stream_id: str, limit: CapacityLimit, live: int) -> None:
        self.stream_id = stream_id
        self.limit = limit
        self.live = live
        what = f"{limit.kind!r} sandboxes" if limit.kind else "sandboxes"
        super().__init__(f"stream {stream_id!r}: {live} {what} hold compute already (limit {limit.limit})")


class LogLink(NamedTuple):
    """One event's place in the log's chain: its position, stream hash and log hash (None when the row
    has none)."""

    position: int
    hash: str | None
    log_hash: str | None
    # Covered by the log hash (events/chain.py ``log_link``), not by the stream hash.
    idempotency_key: str | None = None


class SandboxLeased(StoreError):
    """The append had to find the sandbox without a call in flight (an eviction for capacity), and a
    lease on it had not expired; nothing was written."""

    def __init__(self, stream_id: str, leases: int) -> None:
        self.stream_id = stream_id
        self.leases = leases
        super().__init__(f"stream {stream_id!r}: {leases} call(s) in flight hold a lease on the sandbox")


class ChainedEvent(NamedTuple):
    """An event with the chain hash the store holds for it (None when the row has none).

    ``problem`` says why a row could not be read as an event (a column of the wrong type, text that is
    not UTF-8, JSON the parser refuses): then ``event`` holds only its position, stream id and version
    as found (the rest are placeholders), so the verifier names it and goes on with the other rows.
    """

    event: RecordedEvent
    hash: str | None
    problem: str | None = None
