"""Projections are folds too: a sandbox's state → its read-model row and armed deadlines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, get_args

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.events.records import Deadline, Projection, SandboxRow
from sandbox_lifecycle.events.values import FieldValues, value_class

if TYPE_CHECKING:
    # For the annotation only: settings import Policy from here, and the decider's event classes are
    # a large share of a short command's start-up.
    from sandbox_lifecycle.core.sandbox import Sandbox

# The kinds of deadline a projection arms; every dispatch on one matches this Literal exhaustively.
TimerKind = Literal["idle", "retention", "lease", "checkpoint", "max_lifetime", "warning"]
IDLE: Final = "idle"
RETENTION: Final = "retention"
LEASE: Final = "lease"
# The next checkpoint retention collects (docs/checkpoints.md).
CHECKPOINT: Final = "checkpoint"
# SANDBOX_MAX_LIFETIME_MS after its creation a sandbox is destroyed, whatever its activity.
MAX_LIFETIME: Final = "max_lifetime"
# The next warning (ExpiryWarned) of a timer about to act, ``Policy.warning_lead`` before it.
WARNING: Final = "warning"
# The timers a warning is given for: those a backend may want to answer (docs/lifecycle.md). A lease
# is the service's own business.
WARNED_TIMERS: Final = (IDLE, RETENTION, CHECKPOINT, MAX_LIFETIME)
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
    # A sandbox older than this (since its creation) is destroyed whatever its activity; None: no limit.
    max_lifetime: timedelta | None = None
    # How long before a timer acts its warning is recorded; zero: no warnings. Zero here, so a service
    # built in code records none unless asked; SANDBOX_WARNING_LEAD_MS defaults to a minute.
    warning_lead: timedelta = timedelta(0)

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


class Expiring(NamedTuple):
    """A deadline a warning may be given for: the timer, when it acts, and the checkpoint it collects."""

    timer: str
    due_at: datetime
    checkpoint_version: int | None = None


def expiring(state: Sandbox, policy: Policy) -> list[Expiring]:
    """The armed deadlines of ``state`` a warning is owed for: of a timer in WARNED_TIMERS, not yet
    warned of (``state.warned``). None while warnings are off, or for a pooled sandbox (no backend holds
    it to answer)."""
    if policy.warning_lead <= timedelta(0) or state.pooled:
        return []
    out = []
    for d in _timers(state, policy):
        if d.timer in WARNED_TIMERS and (d.timer, d.due_at) not in state.warned:
            out.append(d)
    return out


def _timers(state: Sandbox, policy: Policy) -> list[Expiring]:
    """Every deadline of ``state`` but the warning's."""
    deadlines: list[Expiring] = []
    # A pooled sandbox waits for a claim, not for activity: the pool's size, not the idle timer,
    # decides how long it lives (lowering the size drains it).
    if state.status in lc.LIVE and state.last_activity_at is not None and not state.pooled:
        due = state.last_activity_at + policy.idle_timeout
        if state.state_since is not None and state.state_since > state.last_activity_at:
            # Idle again after a failed suspend (the only way into idle without activity): the idle
            # timer's retry waits SUSPEND_RETRY_AFTER too, or every sweep would append two more events.
            due = max(due, state.state_since + SUSPEND_RETRY_AFTER)
        deadlines.append(Expiring(IDLE, due))
    if state.status == lc.SUSPENDED and state.suspended_at is not None:
        deadlines.append(Expiring(RETENTION, state.suspended_at + policy.retention))
    if state.status in lc.TRANSITIONAL and state.state_since is not None:
        deadlines.append(Expiring(LEASE, state.state_since + policy.lease))
    elif state.checkpoints and state.status != lc.EXPIRED:
        # why here: the decider's module is a large share of a short command's start-up (see above)
        from sandbox_lifecycle.core.sandbox import collectible

        collect = [(c.at + policy.retention, c.version) for c in state.checkpoints if collectible(state, c)]
        if collect:  # the next checkpoint retention collects
            due, version = min(collect)
            deadlines.append(Expiring(CHECKPOINT, due, version))
    # Only in a stable state: a side effect in flight finishes first, and its outcome re-arms this.
    if policy.max_lifetime is not None and state.created_at is not None and state.status in _STABLE:
        deadlines.append(Expiring(MAX_LIFETIME, state.created_at + policy.max_lifetime))
    return deadlines


# The states a lifetime timer may destroy from (the table's ``max_lifetime`` sources).
_STABLE: Final = frozenset({lc.IDLE, lc.RUNNING, lc.SUSPENDED})


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
    deadlines = [Deadline(state.id, d.timer, d.due_at, state.version) for d in _timers(state, policy)]
    owed = expiring(state, policy)
    if owed:
        first = min(d.due_at for d in owed) - policy.warning_lead
        deadlines.append(Deadline(state.id, WARNING, first, state.version))
    return Projection(row=row, deadlines=tuple(deadlines))
