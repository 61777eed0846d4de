"""Projections are folds too: a sandbox's state → its read-model row and armed deadlines."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final, Literal, get_args

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.events.records import Deadline, Projection, SandboxRow
from sandbox_lifecycle.events.values import FieldValues, value_class

if TYPE_CHECKING:
    # For the annotation only: settings import Policy from here, and the decider's event classes are
    # a large share of a short command's start-up.
    from sandbox_lifecycle.core.sandbox import Sandbox

# The kinds of deadline a projection arms; every dispatch on one matches this Literal exhaustively.
TimerKind = Literal["idle", "retention", "lease", "checkpoint"]
IDLE: Final = "idle"
RETENTION: Final = "retention"
LEASE: Final = "lease"
# The next checkpoint retention collects (docs/checkpoints.md).
CHECKPOINT: Final = "checkpoint"
TIMER_KINDS: Final[tuple[TimerKind, ...]] = get_args(TimerKind)
# A sandbox whose suspend just failed (SuspendFailed: idle again, its instance kept) is not suspended
# again, by the idle timer or an eviction for capacity (core/capacity.py), for this long: whatever broke
# the suspend most likely still does, and each try writes two events (SuspendRequested, SuspendFailed).
# Retried at every sweep or admission, one broken sandbox grew the log without bound; this bounds it.
SUSPEND_RETRY_AFTER = timedelta(seconds=60)


@value_class
class Policy(FieldValues):
    """Timer settings. Deadlines are derived with these; the decider re-checks them when they fire."""

    idle_timeout: timedelta = timedelta(minutes=30)
    retention: timedelta = timedelta(days=7)
    # How long a side effect may stay in flight before the sweep re-drives it from provider reality.
    lease: timedelta = timedelta(minutes=10)

    @property
    def activity_window(self) -> timedelta:
        """Activity closer together than this is recorded once: durable, but not one event per exec."""
        return min(timedelta(seconds=60), self.idle_timeout / 10)


def timer_kind(kind: str) -> TimerKind:
    """A deadline's kind as read from the store, checked: ValueError for one this release does not know."""
    for known in TIMER_KINDS:
        if kind == known:
            return known
    raise ValueError(f"unknown timer kind {kind!r}")


def project(state: Sandbox, policy: Policy) -> Projection:
    if state.kind is None or state.provider is None or state.created_at is None or state.state_since is None:
        raise ValueError(f"sandbox {state.id} has no creation event to project")
    row = SandboxRow(
        id=state.id,
        kind=state.kind,
        provider=state.provider,
        state=state.status,
        version=state.version,
        conversation_id=state.conversation_id,
        provider_ref=state.provider_ref,
        snapshot_key=state.snapshot_key,
        snapshot_sha256=state.snapshot_sha256,
        snapshot_bytes=state.snapshot_bytes,
        last_activity_at=state.last_activity_at,
        state_since=state.state_since,
        created_at=state.created_at,
        expired_reason=state.expired_reason,
    )
    deadlines: list[Deadline] = []
    # A pooled sandbox waits for a claim, not for activity: the pool's size, not the idle timer,
    # decides how long it lives (lowering the size drains it).
    if state.status in lc.LIVE and state.last_activity_at is not None and not state.pooled:
        due = state.last_activity_at + policy.idle_timeout
        if state.state_since > state.last_activity_at:
            # Idle again after a failed suspend (the only way into idle without activity): the idle
            # timer's retry waits SUSPEND_RETRY_AFTER too, or every sweep would append two more events.
            due = max(due, state.state_since + SUSPEND_RETRY_AFTER)
        deadlines.append(Deadline(state.id, IDLE, due, state.version))
    if state.status == lc.SUSPENDED and state.suspended_at is not None:
        deadlines.append(Deadline(state.id, RETENTION, state.suspended_at + policy.retention, state.version))
    if state.status in lc.TRANSITIONAL:
        deadlines.append(Deadline(state.id, LEASE, state.state_since + policy.lease, state.version))
    elif state.checkpoints and state.status != lc.EXPIRED:
        # why here: the decider's module is a large share of a short command's start-up (see above)
        from sandbox_lifecycle.core.sandbox import collectible

        collect = [c.at + policy.retention for c in state.checkpoints if collectible(state, c)]
        if collect:  # the next checkpoint retention collects
            deadlines.append(Deadline(state.id, CHECKPOINT, min(collect), state.version))
    return Projection(row=row, deadlines=tuple(deadlines))
