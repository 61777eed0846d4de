"""The sandbox event types: facts, with no logic.

Every event says who did it (``actor``), why (``reason``) and when (``at``). Guards live in the
decider, never here, because whatever an event does when applied runs again on every replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sandbox_lifecycle.events.values import FieldValues


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class Event(FieldValues):
    """A fact of a sandbox's stream. ``==``, hash and repr are FieldValues's (events/values.py), the same
    as a dataclass's but written once: hence ``eq=False, repr=False`` on every event type."""

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    at: datetime
    actor: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class CreationRequested(Event):
    TYPE = "CreationRequested"
    kind: str
    provider: str
    conversation_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class Created(Event):
    TYPE = "Created"
    provider_ref: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class CreationFailed(Event):
    TYPE = "CreationFailed"
    error: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class TurnStarted(Event):
    TYPE = "TurnStarted"
    turn_id: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class TurnEnded(Event):
    TYPE = "TurnEnded"
    turn_id: str
    # "suspend" or "keep_warm"
    disposition: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class ActivityRecorded(Event):
    """Coalesced activity (exec, file I/O, touch): at most one per activity window."""

    TYPE = "ActivityRecorded"
    # Schema v2 added the count of coalesced operations; v1 events are upcast with count=1.
    SCHEMA_VERSION = 2
    count: int = 1


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class IdleTimeoutElapsed(Event):
    TYPE = "IdleTimeoutElapsed"
    idle_since: datetime
    timeout_ms: int


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class SuspendRequested(Event):
    TYPE = "SuspendRequested"
    snapshot_key: str
    # The background processes running when the suspend was asked for, on a provider whose suspend stops
    # them ({"id", "command": [argv], "cwd"} each), so the next turn can restart them. None: not recorded
    # (events written before this field, or a provider whose pause keeps its processes running).
    running_processes: list[dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class Suspended(Event):
    TYPE = "Suspended"
    snapshot_key: str
    sha256: str | None = None
    bytes: int | None = None
    # The background processes the suspend stopped (as on SuspendRequested); None: not recorded.
    running_processes: list[dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class SuspendFailed(Event):
    TYPE = "SuspendFailed"
    error: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class ResumeRequested(Event):
    TYPE = "ResumeRequested"


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class Resumed(Event):
    TYPE = "Resumed"
    provider_ref: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class ResumeFailed(Event):
    TYPE = "ResumeFailed"
    error: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class RetentionElapsed(Event):
    TYPE = "RetentionElapsed"
    suspended_since: datetime
    retention_ms: int


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class DestroyRequested(Event):
    TYPE = "DestroyRequested"


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class Destroyed(Event):
    TYPE = "Destroyed"


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class ProviderLost(Event):
    """The provider no longer has the sandbox or its snapshot; the workspace is gone."""

    TYPE = "ProviderLost"
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class Pooled(Event):
    """A created, unassigned sandbox joined its kind's warm pool: a new conversation's turn may claim it."""

    TYPE = "Pooled"


@dataclass(frozen=True, kw_only=True, slots=True, eq=False, repr=False)
class Claimed(Event):
    """A turn of ``conversation_id`` took the sandbox from the warm pool (appended at the version the
    claimer saw, so two claimers never get the same one)."""

    TYPE = "Claimed"
    conversation_id: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        CreationRequested,
        Created,
        CreationFailed,
        TurnStarted,
        TurnEnded,
        ActivityRecorded,
        IdleTimeoutElapsed,
        SuspendRequested,
        Suspended,
        SuspendFailed,
        ResumeRequested,
        Resumed,
        ResumeFailed,
        RetentionElapsed,
        DestroyRequested,
        Destroyed,
        ProviderLost,
        Pooled,
        Claimed,
    )
}
