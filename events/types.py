"""The sandbox event types: facts, with no logic.

Every event says who did it (``actor``), why (``reason``) and when (``at``). Guards live in the
decider, never here, because whatever an event does when applied runs again on every replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sandbox_lifecycle.events.values import FieldValues, value_class


@value_class(kw_only=True)
class Event(FieldValues):
    """A fact of a sandbox's stream. ``==``, hash and repr are FieldValues's (events/values.py), the same
    as a dataclass's but written once: hence ``eq=False, repr=False`` on every event type."""

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    at: datetime
    actor: str
    reason: str


@value_class(kw_only=True)
class CreationRequested(Event):
    """The intent to create: the sandbox's kind, its provider and its conversation, if any."""

    TYPE = "CreationRequested"
    kind: str
    provider: str
    conversation_id: str | None = None


@value_class(kw_only=True)
class Created(Event):
    """The provider made the sandbox; ``provider_ref`` names its instance."""

    TYPE = "Created"
    provider_ref: str


@value_class(kw_only=True)
class CreationFailed(Event):
    """The provider could not make the sandbox; it expires."""

    TYPE = "CreationFailed"
    error: str


@value_class(kw_only=True)
class TurnStarted(Event):
    """A turn of the conversation began on the sandbox."""

    TYPE = "TurnStarted"
    turn_id: str


@value_class(kw_only=True)
class TurnEnded(Event):
    """The turn ended; ``disposition`` says whether the sandbox suspends or stays warm."""

    TYPE = "TurnEnded"
    turn_id: str
    # "suspend" or "keep_warm"
    disposition: str


@value_class(kw_only=True)
class ActivityRecorded(Event):
    """Coalesced activity (exec, file I/O, touch): at most one per activity window."""

    TYPE = "ActivityRecorded"
    # Schema v2 added the count of coalesced operations; v1 events are upcast with count=1.
    SCHEMA_VERSION = 2
    count: int = 1


@value_class(kw_only=True)
class IdleTimeoutElapsed(Event):
    """The idle timer fired: no activity since ``idle_since`` for ``timeout_ms``."""

    TYPE = "IdleTimeoutElapsed"
    idle_since: datetime
    timeout_ms: int


@value_class(kw_only=True)
class SuspendRequested(Event):
    """The intent to suspend: the workspace goes to ``snapshot_key``."""

    TYPE = "SuspendRequested"
    snapshot_key: str
    # The background processes running when the suspend was asked for, on a provider whose suspend stops
    # them ({"id", "command": [argv], "cwd"} each), so the next turn can restart them. None: not recorded
    # (events written before this field, or a provider whose pause keeps its processes running).
    running_processes: list[dict[str, Any]] | None = None


@value_class(kw_only=True)
class Suspended(Event):
    """The workspace is stored (and verified) at ``snapshot_key``; the compute is released."""

    TYPE = "Suspended"
    snapshot_key: str
    sha256: str | None = None
    bytes: int | None = None
    # The background processes the suspend stopped (as on SuspendRequested); None: not recorded.
    running_processes: list[dict[str, Any]] | None = None
    # The snapshot is kept as a checkpoint after a resume, until SANDBOX_SNAPSHOT_RETENTION_MS after it
    # was taken (docs/checkpoints.md). False (events written before checkpoints, or a provider that
    # cannot restore an earlier snapshot): it lives only while it is the sandbox's current snapshot.
    kept: bool = False
    # The workspace's size and the bytes this suspend added to the store (new pieces); None: not known
    # (whole archives, E2B, earlier releases). ``bytes`` stays the size of the stored object.
    workspace_bytes: int | None = None
    bytes_new: int | None = None


@value_class(kw_only=True)
class SuspendFailed(Event):
    """The snapshot could not be taken; the sandbox is idle again."""

    TYPE = "SuspendFailed"
    error: str


@value_class(kw_only=True)
class ResumeRequested(Event):
    """The intent to bring a suspended sandbox back."""

    TYPE = "ResumeRequested"


@value_class(kw_only=True)
class Resumed(Event):
    """The sandbox runs again on instance ``provider_ref``, its workspace restored."""

    TYPE = "Resumed"
    provider_ref: str


@value_class(kw_only=True)
class ResumeFailed(Event):
    """The sandbox could not be brought back; it stays suspended."""

    TYPE = "ResumeFailed"
    error: str


@value_class(kw_only=True)
class RetentionElapsed(Event):
    """The retention timer fired: suspended since ``suspended_since`` for ``retention_ms``."""

    TYPE = "RetentionElapsed"
    suspended_since: datetime
    retention_ms: int


@value_class(kw_only=True)
class MaxLifetimeElapsed(Event):
    """The lifetime timer fired: created at ``created_at``, the sandbox reached ``max_lifetime_ms``
    (SANDBOX_MAX_LIFETIME_MS) and is destroyed whatever its activity."""

    TYPE = "MaxLifetimeElapsed"
    created_at: datetime
    max_lifetime_ms: int


@value_class(kw_only=True)
class ExpiryWarned(Event):
    """A timer will act on the sandbox at ``due_at``: ``timer`` is ``idle`` (suspend), ``retention``
    (destroy a suspended sandbox), ``checkpoint`` (collect the checkpoint of ``checkpoint_version``) or
    ``max_lifetime`` (destroy). Recorded once per deadline, ``lead_ms`` before it, so the feed, the relay
    and a replay see it exactly once; a deadline that moves (a touch) is warned of again."""

    TYPE = "ExpiryWarned"
    timer: str
    due_at: datetime
    lead_ms: int
    checkpoint_version: int | None = None


@value_class(kw_only=True)
class DestroyRequested(Event):
    """The intent to remove the sandbox and its snapshot."""

    TYPE = "DestroyRequested"


@value_class(kw_only=True)
class Destroyed(Event):
    """The sandbox and its snapshot are gone; it is expired."""

    TYPE = "Destroyed"


@value_class(kw_only=True)
class ProviderLost(Event):
    """The provider no longer has the sandbox or its snapshot; the workspace is gone."""

    TYPE = "ProviderLost"
    detail: str


@value_class(kw_only=True)
class RecoveryStarted(Event):
    """A sweep takes over the side effect of the ``status`` intent whose lease ran out. Appended at the
    version the sweep loaded, before any provider call, so of two sweeps only one re-drives it (the other
    loses the append); it restarts the lease."""

    TYPE = "RecoveryStarted"
    status: str


@value_class(kw_only=True)
class Pooled(Event):
    """A created, unassigned sandbox joined its kind's warm pool: a new conversation's turn may claim it."""

    TYPE = "Pooled"
    # The version of the kind's image (Docker: its image ID) or template (E2B) read just before the
    # sandbox was created: a claim skips it, and the pool replaces it, once the kind's is another.
    # None: not known (written before this field, or a provider that cannot say).
    image: str | None = None


@value_class(kw_only=True)
class Claimed(Event):
    """A turn of ``conversation_id`` took the sandbox from the warm pool (appended at the version the
    claimer saw, so two claimers never get the same one)."""

    TYPE = "Claimed"
    conversation_id: str


@value_class(kw_only=True)
class CheckpointCollected(Event):
    """Retention collected the checkpoint taken at ``checkpoint_version`` (its snapshot is deleted after
    this event is recorded, so the log never lists a checkpoint whose snapshot is already gone)."""

    TYPE = "CheckpointCollected"
    checkpoint_version: int
    snapshot_key: str


@value_class(kw_only=True)
class Rewound(Event):
    """The sandbox's next resume restores the checkpoint taken at ``to_version`` (stored at
    ``snapshot_key``); later checkpoints stay, so a rewind can itself be undone."""

    TYPE = "Rewound"
    to_version: int
    snapshot_key: str


@value_class(kw_only=True)
class Forked(Event):
    """A fork of this sandbox was made from its checkpoint at ``at_version``: sandbox ``fork_id``."""

    TYPE = "Forked"
    fork_id: str
    at_version: int


@value_class(kw_only=True)
class ForkedFrom(Event):
    """The first event of a fork: a new sandbox, suspended, whose first resume restores a copy of the
    checkpoint of ``source_id`` taken at ``source_version`` (stored for it at ``snapshot_key``)."""

    TYPE = "ForkedFrom"
    source_id: str
    source_version: int
    kind: str
    provider: str
    conversation_id: str | None = None
    snapshot_key: str
    sha256: str | None = None
    bytes: int | None = None


@value_class(kw_only=True)
class EgressChanged(Event):
    """Who changed what the sandbox may reach, and why: ``allow`` replaces its kind's allow-list (hosts,
    ``*.domain`` or ``host:port``, checked before this was recorded); None returns to the kind's list.
    The last one in the log is the sandbox's policy, through suspends and resumes."""

    TYPE = "EgressChanged"
    allow: list[str] | None = None


@value_class(kw_only=True)
class UsageRecorded(Event):
    """What the sandbox used from ``since`` (its create or last resume) until the suspend or destroy
    recorded with it, in the same append, released its compute. A number the provider could not
    measure is None, never 0 (docs/operations.md says which provider measures what)."""

    TYPE = "UsageRecorded"
    since: datetime | None = None
    cpu_seconds: float | int | None = None
    memory_peak_bytes: int | None = None
    # Through the egress point: received by the sandbox (in) and sent by it (out), model calls included.
    egress_bytes_in: int | None = None
    egress_bytes_out: int | None = None
    # Through the model-API gateway: calls, tokens the upstream reported, calls by HTTP status.
    model_requests: int | None = None
    model_input_tokens: int | None = None
    model_output_tokens: int | None = None
    model_statuses: dict[str, int] | None = None


@value_class(kw_only=True)
class CredentialsSet(Event):
    """Who gave the egress point credentials to add to the sandbox's requests to ``host``, and why: the
    NAMES of the headers only, never a value (the values live with the egress point, never in the log).
    ``headers`` empty: the sandbox's credentials for ``host`` were removed."""

    TYPE = "CredentialsSet"
    host: str
    headers: list[str] | None = None


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
        MaxLifetimeElapsed,
        ExpiryWarned,
        DestroyRequested,
        Destroyed,
        ProviderLost,
        Pooled,
        Claimed,
        RecoveryStarted,
        CheckpointCollected,
        Rewound,
        Forked,
        ForkedFrom,
        EgressChanged,
        UsageRecorded,
        CredentialsSet,
    )
}
