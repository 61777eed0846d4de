"""The decider: ``decide(state, command, now) -> events`` and ``evolve(state, event) -> state``.

Both are pure. ``decide`` holds every guard and raises typed errors; ``evolve`` records facts and is
total (it never raises and never reads a clock), so replaying a log always gives the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import reduce
from typing import Any, ClassVar, NamedTuple, TypedDict

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.checkpoint_record import Checkpoint
from sandbox_lifecycle.core.errors import CheckpointNotFound, InvalidTransition, SandboxBusy, SandboxExpired
from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.values import FieldValues, value_class


class Sandbox(NamedTuple):
    """A sandbox's state: the fold of its events.

    A NamedTuple rather than a dataclass because replay copies it once per event, and a tuple is
    several times cheaper to copy than a frozen dataclass (see ``_copy``; bench/rebuild_bench.py).
    """

    id: str
    status: str = lc.NEW
    version: int = 0
    kind: str | None = None
    provider: str | None = None
    conversation_id: str | None = None
    provider_ref: str | None = None
    snapshot_key: str | None = None
    snapshot_sha256: str | None = None
    snapshot_bytes: int | None = None
    # The key the in-flight suspend writes to; derived from the intent's version so a retry reuses it.
    pending_snapshot_key: str | None = None
    turn_id: str | None = None
    created_at: datetime | None = None
    state_since: datetime | None = None
    last_activity_at: datetime | None = None
    suspended_at: datetime | None = None
    expired_at: datetime | None = None
    expired_reason: str | None = None
    # Why the in-flight destroy was asked for (user, retention...): what the expiry will say.
    destroy_reason: str | None = None
    last_error: str | None = None
    # The background processes the last suspend recorded as running (see SuspendRequested): what a turn
    # may restart. () when none were recorded.
    stopped_processes: tuple[dict[str, Any], ...] = ()
    # In its kind's warm pool: created for no conversation yet, claimable by a new one's turn.
    pooled: bool = False
    # The checkpoints retention has not collected, oldest first (docs/checkpoints.md).
    checkpoints: tuple[Checkpoint, ...] = ()
    # The allow-list the last EgressChanged set, replacing the kind's; None: the kind's own.
    egress_allow: tuple[str, ...] | None = None
    # What the live workspace was restored from: its next suspend reuses its pieces (docs/checkpoints.md).
    resumed_from: str | None = None
    # The deadlines already warned of (ExpiryWarned): (timer, due), the latest per timer.
    warned: tuple[tuple[str, datetime], ...] = ()


def initial(sandbox_id: str) -> Sandbox:
    return Sandbox(id=sandbox_id)


def snapshot_key(sandbox_id: str, version: int) -> str:
    return f"snapshots/{sandbox_id}/{version}.tar.zst"


@value_class(kw_only=True)
class Command(FieldValues):
    """What a caller asks of a sandbox. ``==``, hash and repr are FieldValues's (events/values.py), as
    for the events: hence ``eq=False, repr=False`` on every command."""

    TRIGGER: ClassVar[str] = ""

    actor: str = "api"
    reason: str = "user"


@value_class(kw_only=True)
class Create(Command):
    """Create a sandbox of ``kind`` on ``provider``, for a conversation or none."""

    kind: str
    provider: str
    conversation_id: str | None = None
    TRIGGER = "create"


@value_class(kw_only=True)
class MarkReady(Command):
    """Record that the provider made the sandbox."""

    provider_ref: str
    TRIGGER = "mark_ready"


@value_class(kw_only=True)
class StartTurn(Command):
    """Start a turn of the sandbox's conversation."""

    turn_id: str
    reason: str = "turn_start"
    TRIGGER = "start_turn"


@value_class(kw_only=True)
class EndTurn(Command):
    """End the turn: suspend the sandbox, or keep it warm."""

    turn_id: str
    suspend: bool = True
    reason: str = "turn_end"
    running_processes: list[dict[str, Any]] | None = None


@value_class(kw_only=True)
class Touch(Command):
    """Activity. Coalesced: nothing is recorded if the last activity is younger than ``window``."""

    window: timedelta = timedelta(0)
    count: int = 1
    reason: str = "activity"
    TRIGGER = "touch"


@value_class(kw_only=True)
class RequestSuspend(Command):
    """Suspend the sandbox: snapshot its workspace, then release its compute."""

    running_processes: list[dict[str, Any]] | None = None
    TRIGGER = "request_suspend"


@value_class(kw_only=True)
class MarkSuspended(Command):
    """Record the stored snapshot of a suspend."""

    snapshot_key: str
    sha256: str | None = None
    bytes: int | None = None
    running_processes: list[dict[str, Any]] | None = None
    # The provider can restore this snapshot later (capabilities.checkpoints): it is kept as a checkpoint.
    kept: bool = False
    workspace_bytes: int | None = None
    bytes_new: int | None = None
    TRIGGER = "mark_suspended"


@value_class(kw_only=True)
class RequestResume(Command):
    """Bring a suspended sandbox back."""

    TRIGGER = "request_resume"


@value_class(kw_only=True)
class MarkResumed(Command):
    """Record the instance a resume brought back."""

    provider_ref: str
    TRIGGER = "mark_resumed"


@value_class(kw_only=True)
class FireIdleTimeout(Command):
    """The idle timer: suspend if nothing happened for ``timeout``."""

    timeout: timedelta
    actor: str = "scheduler"
    reason: str = "idle_timeout"
    running_processes: list[dict[str, Any]] | None = None
    TRIGGER = "idle_timeout"


@value_class(kw_only=True)
class TimerCommand(Command):
    """A timer's command (core/timers.py): it re-checks its own guard, so a stale timer (activity since it
    was armed, or the sandbox moved on) decides to nothing instead of failing."""

    actor: str = "scheduler"

    def fire(self, state: Sandbox, base: dict[str, Any], now: datetime) -> list[ev.Event]:
        raise NotImplementedError


@value_class(kw_only=True)
class Destroy(Command):
    """Remove the sandbox and its snapshot."""

    TRIGGER = "destroy"


@value_class(kw_only=True)
class MarkDestroyed(Command):
    """Record that the provider removed the sandbox."""

    TRIGGER = "mark_destroyed"


@value_class(kw_only=True)
class Pool(Command):
    """Put a created, unassigned sandbox in its kind's warm pool."""

    reason: str = "warm_pool"
    image: str | None = None  # the version of the kind's image it was made from (ev.Pooled)
    TRIGGER = "pool"


@value_class(kw_only=True)
class Claim(Command):
    """Take a pooled sandbox for ``conversation_id``."""

    conversation_id: str
    reason: str = "turn_start"
    TRIGGER = "claim"


@value_class(kw_only=True)
class SetEgress(Command):
    """Replace what the sandbox may reach with ``allow`` (entries already checked by the provider), or
    return to its kind's allow-list (None)."""

    allow: tuple[str, ...] | None = None
    TRIGGER = "set_egress"


@value_class(kw_only=True)
class SetCredentials(Command):
    """Record which headers the egress point adds to the sandbox's requests to ``host`` (names only)."""

    host: str
    headers: tuple[str, ...] = ()
    TRIGGER = "set_credentials"


@value_class(kw_only=True)
class MarkFailed(Command):
    """Record a failed create, suspend or resume."""

    error: str
    TRIGGER = "mark_failed"


@value_class(kw_only=True)
class MarkLost(Command):
    """Record that the provider lost the sandbox."""

    detail: str
    reason: str = "provider_lost"
    TRIGGER = "mark_lost"


@value_class(kw_only=True)
class Rewind(Command):
    """Point the suspended sandbox's next resume at its checkpoint of ``to_version``."""

    to_version: int
    TRIGGER = "rewind"


@value_class(kw_only=True)
class Fork(Command):
    """Start a new stream, suspended on ``snapshot`` (a copy of a checkpoint of ``source_id``)."""

    source_id: str
    source_version: int
    kind: str
    provider: str
    conversation_id: str | None = None
    snapshot_key: str
    sha256: str | None = None
    bytes: int | None = None
    reason: str = "fork"
    TRIGGER = "fork"


@value_class(kw_only=True)
class RecordFork(Command):
    """Record on the source that ``fork_id`` was forked from its checkpoint of ``at_version``."""

    fork_id: str
    at_version: int
    reason: str = "fork"
    TRIGGER = "record_fork"


@value_class(kw_only=True)
class CollectCheckpoints(Command):
    """The checkpoint timer: collect every checkpoint taken ``retention`` ago or more, except the
    snapshot the sandbox resumes from (that one keeps the sandbox's own retention)."""

    retention: timedelta
    actor: str = "scheduler"
    reason: str = "retention"
    TRIGGER = "collect_checkpoint"


def collectible(state: Sandbox, cp: Checkpoint) -> bool:
    """Retention may collect it: kept after a resume, and not the snapshot the sandbox resumes from."""
    keep = (state.snapshot_key, state.pending_snapshot_key, state.resumed_from)
    return cp.kept and cp.snapshot_key not in keep


def find_checkpoint(state: Sandbox, version: int) -> Checkpoint:
    """The checkpoint taken at ``version``; CheckpointNotFound when the log holds none (never taken, or
    collected)."""
    for cp in state.checkpoints:
        if cp.version == version:
            return cp
    raise CheckpointNotFound(state.id, version, tuple(c.version for c in state.checkpoints))


@value_class(kw_only=True)
class Recover(Command):
    """A sweep takes over an intent whose lease ran out (see ev.RecoveryStarted)."""

    actor: str = "reconciler"
    reason: str = "recovery"
    TRIGGER = "recover"


def trigger_of(cmd: Command) -> str:
    """The table's trigger a command asks for."""
    if isinstance(cmd, EndTurn):
        return "end_turn_suspend" if cmd.suspend else "end_turn_keep_warm"
    return cmd.TRIGGER


class _Base(TypedDict):
    at: datetime
    actor: str
    reason: str


def _ensure(state: Sandbox, cmd: Command) -> None:
    if lc.destination(trigger_of(cmd), state.status) is not None:
        return
    if state.status in lc.TERMINAL:
        raise SandboxExpired(state.id, state.expired_at, state.expired_reason)
    # Someone else holds the sandbox (an open turn or an in-flight side effect): a retry later
    # may succeed, which is what SandboxBusy tells the caller.
    if isinstance(cmd, StartTurn | RequestSuspend | RequestResume | Destroy | Rewind | RecordFork) and (
        state.status in lc.TRANSITIONAL or state.status == lc.RUNNING
    ):
        raise SandboxBusy(state.id, state.status)
    raise InvalidTransition(state.id, state.status, trigger_of(cmd), lc.allowed_triggers(state.status))


def decide(state: Sandbox, cmd: Command, now: datetime) -> list[ev.Event]:
    """The events ``cmd`` produces from ``state`` at ``now``; [] when there is nothing to do."""
    base = _Base(at=now, actor=cmd.actor, reason=cmd.reason)

    # Timer commands re-check their guard: a stale timer (activity since it was armed, or the
    # sandbox moved on) decides to nothing instead of failing.
    if isinstance(cmd, FireIdleTimeout):
        if state.status not in lc.LIVE or state.last_activity_at is None:
            return []
        if now - state.last_activity_at < cmd.timeout:
            return []
        return [
            ev.IdleTimeoutElapsed(**base, idle_since=state.last_activity_at, timeout_ms=_ms(cmd.timeout)),
            ev.SuspendRequested(
                **base,
                snapshot_key=snapshot_key(state.id, state.version + 2),
                running_processes=cmd.running_processes,
            ),
        ]
    if isinstance(cmd, TimerCommand):
        return cmd.fire(state, dict(base), now)

    if isinstance(cmd, CollectCheckpoints):
        if lc.destination(cmd.TRIGGER, state.status) is None:
            return []  # in flight or expired: the timer stays armed, or the destroy deletes them all
        return [
            ev.CheckpointCollected(**base, checkpoint_version=c.version, snapshot_key=c.snapshot_key)
            for c in state.checkpoints
            if collectible(state, c) and now - c.at >= cmd.retention
        ]

    _ensure(state, cmd)
    match cmd:
        case Create():
            return [
                ev.CreationRequested(
                    **base, kind=cmd.kind, provider=cmd.provider, conversation_id=cmd.conversation_id
                )
            ]
        case MarkReady():
            return [ev.Created(**base, provider_ref=cmd.provider_ref)]
        case StartTurn():
            return [ev.TurnStarted(**base, turn_id=cmd.turn_id)]
        case EndTurn():
            if cmd.turn_id != state.turn_id:
                raise InvalidTransition(state.id, state.status, f"{trigger_of(cmd)} of turn {cmd.turn_id}")
            ended = ev.TurnEnded(
                **base, turn_id=cmd.turn_id, disposition="suspend" if cmd.suspend else "keep_warm"
            )
            if not cmd.suspend:
                return [ended]
            return [
                ended,
                ev.SuspendRequested(
                    **base,
                    snapshot_key=snapshot_key(state.id, state.version + 2),
                    running_processes=cmd.running_processes,
                ),
            ]
        case Touch():
            if state.last_activity_at is not None and now - state.last_activity_at < cmd.window:
                return []
            return [ev.ActivityRecorded(**base, count=cmd.count)]
        case RequestSuspend():
            return [
                ev.SuspendRequested(
                    **base,
                    snapshot_key=snapshot_key(state.id, state.version + 1),
                    running_processes=cmd.running_processes,
                )
            ]
        case MarkSuspended():
            return [
                ev.Suspended(
                    **base,
                    snapshot_key=cmd.snapshot_key,
                    sha256=cmd.sha256,
                    bytes=cmd.bytes,
                    running_processes=cmd.running_processes,
                    kept=cmd.kept,
                    workspace_bytes=cmd.workspace_bytes,
                    bytes_new=cmd.bytes_new,
                )
            ]
        case RequestResume():
            return [ev.ResumeRequested(**base)]
        case MarkResumed():
            return [ev.Resumed(**base, provider_ref=cmd.provider_ref)]
        case Destroy():
            return [ev.DestroyRequested(**base)]
        case MarkDestroyed():
            return [ev.Destroyed(**base)]
        case Pool():
            if state.conversation_id is not None or state.pooled:
                raise InvalidTransition(state.id, state.status, "pool (it has a conversation or is pooled)")
            return [ev.Pooled(**base, image=cmd.image)]
        case Claim():
            if not state.pooled:
                raise InvalidTransition(state.id, state.status, "claim (it is not in a warm pool)")
            return [ev.Claimed(**base, conversation_id=cmd.conversation_id)]
        case SetEgress():
            if cmd.allow == state.egress_allow:
                return []  # already the sandbox's policy: nothing new to record
            return [ev.EgressChanged(**base, allow=None if cmd.allow is None else list(cmd.allow))]
        case SetCredentials():  # every call is recorded: the log holds each use, never a value
            return [ev.CredentialsSet(**base, host=cmd.host, headers=list(cmd.headers))]
        case MarkFailed():
            return [FAILED_EVENTS[state.status](**base, error=cmd.error)]
        case MarkLost():
            return [ev.ProviderLost(**base, detail=cmd.detail)]
        case Recover():
            return [ev.RecoveryStarted(**base, status=state.status)]
        case Rewind():
            cp = find_checkpoint(state, cmd.to_version)
            return [ev.Rewound(**base, to_version=cp.version, snapshot_key=cp.snapshot_key)]
        case Fork():
            return [
                ev.ForkedFrom(
                    **base,
                    source_id=cmd.source_id,
                    source_version=cmd.source_version,
                    kind=cmd.kind,
                    provider=cmd.provider,
                    conversation_id=cmd.conversation_id,
                    snapshot_key=cmd.snapshot_key,
                    sha256=cmd.sha256,
                    bytes=cmd.bytes,
                )
            ]
        case RecordFork():
            return [ev.Forked(**base, fork_id=cmd.fork_id, at_version=cmd.at_version)]
    raise TypeError(f"unknown command {type(cmd).__name__}")


# The outcome of a failed side effect, by the transitional state it failed in (``_ensure`` has checked the
# table allows ``mark_failed`` there). A test checks it names every source of ``mark_failed``.
FAILED_EVENTS: dict[str, Callable[..., ev.Event]] = {
    lc.CREATING: ev.CreationFailed,
    lc.SUSPENDING: ev.SuspendFailed,
    lc.RESUMING: ev.ResumeFailed,
}


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


# Replay copies the state once per event, so the copy is built directly: a list of the fields, the
# changes written at precomputed indexes, then tuple.__new__. ``_replace`` (a generic map over every
# field plus keyword bookkeeping) cost about three times as much (bench/rebuild_bench.py).
_INDEX = {name: i for i, name in enumerate(Sandbox._fields)}
_VERSION, _STATUS = _INDEX["version"], _INDEX["status"]
_new_state = tuple.__new__


def _copy(state: Sandbox, changes: dict[str, Any]) -> Sandbox:
    values: list[Any] = list(state)
    values[_VERSION] += 1
    for name, value in changes.items():
        values[_INDEX[name]] = value
    return _new_state(Sandbox, values)


def _next(state: Sandbox, **changes: Any) -> Sandbox:
    """The state after one more event: version + 1 and ``changes`` (names of Sandbox fields)."""
    return _copy(state, changes)


def _moved(state: Sandbox, status: str, at: datetime, **changes: Any) -> Sandbox:
    """``_next`` into ``status``; ``state_since`` restarts only when the status changes."""
    if status != state[_STATUS]:
        changes["status"] = status
        changes["state_since"] = at
    return _copy(state, changes)


def evolve(state: Sandbox, event: ev.Event) -> Sandbox:
    """Apply a recorded fact. Total: never raises, never looks at a clock."""
    s = state
    at = event.at
    match event:
        case ev.CreationRequested():
            return _moved(
                s,
                lc.CREATING,
                at,
                kind=event.kind,
                provider=event.provider,
                conversation_id=event.conversation_id,
                created_at=at,
                last_activity_at=at,
            )
        case ev.Created():
            return _moved(s, lc.IDLE, at, provider_ref=event.provider_ref, last_activity_at=at)
        case ev.CreationFailed():
            return _moved(
                s, lc.EXPIRED, at, expired_at=at, expired_reason=event.reason, last_error=event.error
            )
        case ev.ForkedFrom():
            cp = Checkpoint(
                s.version + 1, at, event.reason, event.snapshot_key, event.sha256, event.bytes, True
            )
            return _moved(
                s,
                lc.SUSPENDED,
                at,
                kind=event.kind,
                provider=event.provider,
                conversation_id=event.conversation_id,
                created_at=at,
                last_activity_at=at,
                snapshot_key=event.snapshot_key,
                snapshot_sha256=event.sha256,
                snapshot_bytes=event.bytes,
                suspended_at=at,
                checkpoints=(cp,),
            )
        case ev.TurnStarted():
            # Leaving idle in any way (a turn, a suspend, a destroy, a loss) leaves the pool too.
            return _moved(s, lc.RUNNING, at, turn_id=event.turn_id, last_activity_at=at, pooled=False)
        case ev.TurnEnded():
            return _moved(s, lc.IDLE, at, turn_id=None, last_activity_at=at)
        case ev.ActivityRecorded():
            return _next(s, last_activity_at=at)
        case ev.IdleTimeoutElapsed() | ev.RetentionElapsed() | ev.MaxLifetimeElapsed():
            return _next(s)
        case ev.ExpiryWarned():
            return _next(
                s, warned=(*(w for w in s.warned if w[0] != event.timer), (event.timer, event.due_at))
            )
        case ev.SuspendRequested():
            # A pooled sandbox that is suspended or destroyed has left its pool.
            return _moved(
                s,
                lc.SUSPENDING,
                at,
                pending_snapshot_key=event.snapshot_key,
                turn_id=None,
                stopped_processes=tuple(event.running_processes or ()),
                pooled=False,
            )
        case ev.Suspended():
            taken = Checkpoint(
                s.version + 1, at, event.reason, event.snapshot_key, event.sha256, event.bytes, event.kept
            )._replace(workspace_bytes=event.workspace_bytes, bytes_new=event.bytes_new)
            # A checkpoint that is not kept lives only while it is current; a key written again (E2B's
            # paused instance is the same sandbox every time) is one checkpoint, the newest.
            kept = tuple(c for c in s.checkpoints if c.kept and c.snapshot_key != event.snapshot_key)
            return _moved(
                s,
                lc.SUSPENDED,
                at,
                provider_ref=None,
                snapshot_key=event.snapshot_key,
                snapshot_sha256=event.sha256,
                snapshot_bytes=event.bytes,
                pending_snapshot_key=None,
                suspended_at=at,
                stopped_processes=tuple(event.running_processes or ()),
                checkpoints=(*kept, taken),
                resumed_from=None,
            )
        case ev.SuspendFailed():
            return _moved(
                s, lc.IDLE, at, pending_snapshot_key=None, last_error=event.error, stopped_processes=()
            )
        case ev.ResumeRequested():
            return _moved(s, lc.RESUMING, at)
        case ev.Resumed():
            # The workspace lives in the instance again; its snapshot is deleted after this event.
            return _moved(
                s,
                lc.IDLE,
                at,
                provider_ref=event.provider_ref,
                last_activity_at=at,
                snapshot_key=None,
                snapshot_sha256=None,
                snapshot_bytes=None,
                resumed_from=s.snapshot_key,
                # A snapshot that is not kept is spent by the resume (deleted after this event).
                checkpoints=tuple(c for c in s.checkpoints if c.kept),
            )
        case ev.ResumeFailed():
            return _moved(s, lc.SUSPENDED, at, last_error=event.error)
        case ev.DestroyRequested():
            return _moved(s, lc.DESTROYING, at, turn_id=None, destroy_reason=event.reason, pooled=False)
        case ev.Destroyed():
            return _moved(
                s,
                lc.EXPIRED,
                at,
                provider_ref=None,
                snapshot_key=None,
                expired_at=at,
                expired_reason=state.destroy_reason or event.reason,
                checkpoints=(),
            )
        case ev.RecoveryStarted():
            # Same status; the lease runs from the takeover, so no other sweep re-drives it meanwhile.
            return _next(s, state_since=at)
        case ev.Pooled():
            return _next(s, pooled=True)
        case ev.Claimed():
            return _next(s, pooled=False, conversation_id=event.conversation_id, last_activity_at=at)
        case ev.EgressChanged():
            return _next(s, egress_allow=None if event.allow is None else tuple(event.allow))
        case ev.ProviderLost():
            return _moved(
                s,
                lc.EXPIRED,
                at,
                provider_ref=None,
                expired_at=at,
                expired_reason=event.reason,
                last_error=event.detail,
                pooled=False,
                checkpoints=(),
            )
        case ev.Rewound():
            target = next((c for c in s.checkpoints if c.version == event.to_version), None)
            if target is None:  # never decided so; a hand-edited log changes nothing but the version
                return _next(s)
            return _next(
                s,
                snapshot_key=target.snapshot_key,
                snapshot_sha256=target.sha256,
                snapshot_bytes=target.bytes,
            )
        case ev.CheckpointCollected():
            return _next(
                s, checkpoints=tuple(c for c in s.checkpoints if c.version != event.checkpoint_version)
            )
        case ev.Forked():
            return _next(s)
    # An event type this fold does not know changes nothing but the version (decoding already
    # refuses types this release cannot read, so this is only reached by subclasses).
    return _next(s)


def replay(sandbox_id: str, events: Iterable[ev.Event], start: Sandbox | None = None) -> Sandbox:
    return reduce(evolve, events, start if start is not None else initial(sandbox_id))
