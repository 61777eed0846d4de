"""The application service: the only place that sequences side effects.

Every side effect follows the same three steps: append an intent (with the expected version, so a
racer loses), call the provider with a name derived from the intent (so a retry is idempotent),
append the outcome. ``drive`` is the one place that takes a transitional state to its outcome, for a
command, a turn, a timer and the sweep's recovery alike. A crash between the steps leaves a
transitional state whose lease deadline lets the sweep (``core/recovery.py``) re-drive it from
provider reality.
"""

from __future__ import annotations

import builtins
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sandbox_lifecycle.core import feed, inflight, outcomes
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.capacity import Admission, Capacity
from sandbox_lifecycle.core.errors import (
    CommandFailed,
    ConcurrencyError,
    ForeignSandbox,
    ProcessNotFound,
    ProviderLost,
    SandboxBusy,
    SandboxError,
    SandboxExpired,
    SandboxNotFound,
    SideEffectFailed,
    StoreError,
    Unsupported,
)
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.observe import (
    NULL_OBSERVER,
    ObservedProvider,
    Observer,
    SafeObserver,
    in_log_context,
    in_sandbox_context,
)
from sandbox_lifecycle.core.pool import WarmPool
from sandbox_lifecycle.core.ports import (
    EventStore,
    ExecResult,
    FileEntry,
    OutputCallback,
    ProcessInfo,
    ProviderCapabilities,
    SandboxProvider,
    SnapshotInfo,
    TransferReport,
)
from sandbox_lifecycle.core.processes import DEFAULT_WAIT_S, Process, ProcessLogs, as_record, from_record
from sandbox_lifecycle.core.projection import Policy, project
from sandbox_lifecycle.core.recovery import RECONCILER, Sweeper, SweepReport
from sandbox_lifecycle.core.streaming import ExecStream
from sandbox_lifecycle.events.codec import decode, encode
from sandbox_lifecycle.events.records import RecordedEvent, SandboxRow
from sandbox_lifecycle.events.values import FieldValues, value_class

if TYPE_CHECKING:
    # Imported where they are used: a short command never reads a history or runs git.
    from sandbox_lifecycle.core.git import Git
    from sandbox_lifecycle.core.replay import HistoryEntry

__all__ = ["FOREIGN", "RECONCILER", "SandboxService", "SweepReport", "TurnHandle", "new_sandbox_id", "utcnow"]

log = logging.getLogger("sandbox_lifecycle")

T = TypeVar("T")

# A racer that loses an append reloads and decides again; this bounds how often.
_MAX_RACES = 5
# Waiting for another caller's side effect: the first poll comes soon (a resume takes about a second),
# later ones back off to this.
_POLL_FIRST, _POLL_MAX = 0.05, 1.0
# The expiry reason of a sandbox whose provider instance belongs to another deployment.
FOREIGN = "foreign_deployment"
# The reason of the activity a heartbeat records (core/inflight.py), kept importable from here.
HEARTBEAT_REASON = inflight.HEARTBEAT_REASON
# A heartbeat outlives no call by more than this: past an exec's timeout the provider has killed it.
_HEARTBEAT_GRACE_S = 60.0
# File calls carry no timeout of their own; their heartbeat stops after this at the latest.
_FILE_CALL_BEAT_S = 3600.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_sandbox_id() -> str:
    return random_id()[:16]


# What a provider without a ``capabilities`` attribute is taken to support: nothing optional.
_NO_CAPABILITIES = ProviderCapabilities(
    isolation="unknown", pause_keeps_processes=False, egress_allow_list=False, ports=False
)


class _Duplicate(Exception):
    """An append whose idempotency key was already used: nothing was written."""


class SandboxService:
    def __init__(
        self,
        store: EventStore,
        provider: SandboxProvider,
        *,
        policy: Policy | None = None,
        clock: Callable[[], datetime] = utcnow,
        actor: str = "api",
        sweep_workers: int = 8,
        busy_wait: timedelta | None = None,
        observer: Observer | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        self.sweep_workers = sweep_workers
        self.store = store
        self.provider = provider
        self.observer: Observer = NULL_OBSERVER
        if observer is not None:
            self.attach_observer(observer)
        self.policy = policy or Policy()
        self.clock = clock
        self.actor = actor
        # How long a call waits for another caller's in-flight side effect (a resume, a create) before
        # it reports the sandbox busy; by default the lease, past which the sweep takes the effect over.
        self.busy_wait = self.policy.lease if busy_wait is None else busy_wait
        self._sweeper = Sweeper(self)
        # SANDBOX_MAX_LIVE and the warm pools (core/capacity.py, core/pool.py).
        self.capacity = capacity or Capacity()
        self._admission = Admission(self)
        self.pools = WarmPool(self)

    def attach_observer(self, observer: Observer) -> None:
        """Report to ``observer`` (metrics and the like, core/observe.py) from now on; every provider
        call is then timed for it. Called once, at start-up, before the service is shared."""
        self.observer = SafeObserver(observer)
        self.provider = cast(SandboxProvider, ObservedProvider(self.provider, self.observer))

    # ------------------------------------------------------------------------------ loading & append

    def load(self, sandbox_id: str) -> sb.Sandbox:
        records = self.store.read_stream(sandbox_id)
        if not records:
            raise SandboxNotFound(sandbox_id)
        return sb.replay(sandbox_id, (decode(r) for r in records))

    def _apply(
        self,
        state: sb.Sandbox,
        cmd: sb.Command,
        *,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
        at: datetime | None = None,
        unleased: bool = False,
    ) -> sb.Sandbox:
        """Decide and append at the version ``state`` was loaded at. ConcurrencyError if a racer won.
        ``at`` is a floor for the event time: a sweep run for a moment in the future (``--now``) stamps
        its outcomes no earlier than its triggers, so a history never runs backwards. ``unleased``: the
        store refuses (SandboxLeased) while a call in flight holds a lease on the sandbox."""
        now = self.clock()
        events = sb.decide(state, cmd, now if at is None else max(at, now))
        if not events:
            return state
        after = sb.replay(state.id, events, start=state)
        meta = {"correlation_id": correlation_id} if correlation_id else {}
        # An append that makes the sandbox hold compute carries the capacity limits: the store counts
        # in its own transaction (CapacityRefused when full; see core/capacity.py).
        limits: dict[str, Any] = {}
        # Only a create or a resume takes compute; a destroy of a suspended sandbox frees what is left
        # and is never refused.
        entering = state.status not in lc.HOLDS_COMPUTE and after.status in (lc.CREATING, lc.RESUMING)
        if entering and (capacity := self.capacity.limits(after.kind or "")):
            limits["capacity"] = capacity
        if unleased:
            limits["unleased_at"] = now
        result = self.store.append(
            state.id,
            state.version,
            [encode(e, **meta) for e in events],
            idempotency_key=idempotency_key,
            projection=project(after, self.policy),
            **limits,
        )
        if result.duplicate:
            # The key was used before: nothing was written, so ``after`` is not what the log holds.
            raise _Duplicate(state.id)
        if after.status != state.status:
            self.observer.transition(
                kind=after.kind, from_state=state.status, to_state=after.status, reason=cmd.reason
            )
        return after

    def _run(
        self, sandbox_id: str, make: Callable[[sb.Sandbox], sb.Command], correlation_id: str | None = None
    ) -> tuple[sb.Sandbox, sb.Sandbox]:
        """Load, decide, append; on a lost race reload and decide again. Returns (before, after)."""
        for _ in range(_MAX_RACES):
            state = self.load(sandbox_id)
            try:
                return state, self._apply(state, make(state), correlation_id=correlation_id)
            except ConcurrencyError:
                continue
        raise SandboxBusy(sandbox_id, "contended", "too many concurrent writers")

    # ------------------------------------------------------------------------------------- queries

    def get(self, sandbox_id: str) -> SandboxRow:
        row = self.store.get_sandbox(sandbox_id)
        if row is None:
            raise SandboxNotFound(sandbox_id)
        return row

    def list(self, state: str | None = None) -> builtins.list[SandboxRow]:
        return self.store.list_sandboxes(state)

    def history(self, sandbox_id: str) -> builtins.list[HistoryEntry]:
        from sandbox_lifecycle.core.replay import history

        records = self.store.read_stream(sandbox_id)
        if not records:
            raise SandboxNotFound(sandbox_id)
        return history(sandbox_id, records)

    def events(
        self,
        after_position: int = 0,
        follow: bool = False,
        *,
        sandbox_id: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[RecordedEvent]:
        """The log in commit order, from just after ``after_position`` (see core/feed.py). With
        ``follow`` it waits for new events until ``stop`` is set or the iterator is closed; each event's
        ``position`` is where to resume from."""
        return feed.tail(self.store, after_position, follow, stream_id=sandbox_id, stop=stop)

    # ------------------------------------------------------------------ driving a side effect (once)

    @in_log_context
    def drive(
        self,
        state: sb.Sandbox,
        cid: str,
        reason: str,
        at: datetime | None = None,
        *,
        actor: str | None = None,
        recovery: bool = False,
    ) -> sb.Sandbox:
        """Take a transitional state to its outcome: do the side effect its intent names, append the
        outcome. Any other state is returned as it is.

        The outcome carries ``actor``, the actor of the intent. ``recovery`` is the sweep re-driving an
        intent past its lease from provider reality: its outcomes are the reconciler's, and an
        interrupted create is adopted if the provider has it, never started anew for a caller who is
        long gone.

        A failure gets an outcome too (see ``_failure_recorded``) and is raised as a SandboxError.
        """
        who = RECONCILER if recovery else (actor or self.actor)
        match state.status:
            case lc.CREATING:
                return self._drive_create(state, cid, reason, at, who, recovery)
            case lc.SUSPENDING:
                return self._drive_suspend(state, cid, reason, at, who)
            case lc.RESUMING:
                return self._drive_resume(state, cid, reason, at, who)
            case lc.DESTROYING:
                return self._drive_destroy(state, cid, reason, at, who)
        return state

    def _drive_create(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str, recovery: bool
    ) -> sb.Sandbox:
        assert state.kind is not None
        ref: str | None
        with self._failure_recorded(state, cid, reason, at, actor, "create"):
            if recovery:
                inst = self.provider.instance(state.id)
                ref = inst.ref if inst is not None else None
            else:
                ref = self.provider.create(state.id, state.kind)
        if ref is None:
            return self._apply(
                state,
                sb.MarkFailed(
                    error="creation interrupted before the provider had it", actor=actor, reason=reason
                ),
                correlation_id=cid,
                at=at,
            )
        try:
            return self._apply(
                state, sb.MarkReady(provider_ref=ref, actor=actor, reason=reason), correlation_id=cid, at=at
            )
        except BaseException:
            # Recording failed. If the log holds the instance all the same (the sweep recorded it past the
            # lease), it is the sandbox's; otherwise it must not outlive its record (no orphan).
            if not recovery and not self._log_holds(state.id, ref):
                log.warning("recording sandbox %s failed; destroying its provider sandbox", state.id)
                self.provider.destroy(state.id, ref)
            raise

    def _log_holds(self, sandbox_id: str, ref: str) -> bool:
        try:
            now = self.load(sandbox_id)
        except Exception:
            return False
        return now.provider_ref == ref and now.status not in (lc.CREATING, lc.EXPIRED)

    def _drive_suspend(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str
    ) -> sb.Sandbox:
        assert state.kind and state.pending_snapshot_key
        with self._failure_recorded(state, cid, reason, at, actor, "suspend"):
            info = outcomes.suspend_or_stored(self, state)  # a snapshot stored before a failure counts
        previous = state.snapshot_key
        after = self._apply(
            state,
            sb.MarkSuspended(
                snapshot_key=info.key,
                sha256=info.sha256,
                bytes=info.bytes,
                actor=actor,
                reason=reason,
                running_processes=list(state.stopped_processes) or None,
            ),
            correlation_id=cid,
            at=at,
        )
        # The superseded snapshot goes only once the new one is recorded; a failure here leaves an
        # orphan for the reconciler, never a lost workspace.
        if previous and previous != info.key:
            self._delete_snapshot_quietly(SnapshotInfo(previous, state.snapshot_sha256, state.snapshot_bytes))
        return after

    def _drive_resume(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str
    ) -> sb.Sandbox:
        assert state.kind and state.snapshot_key
        snapshot = SnapshotInfo(state.snapshot_key, state.snapshot_sha256, state.snapshot_bytes)
        with self._failure_recorded(state, cid, reason, at, actor, "resume"):
            ref = self.provider.resume(state.id, state.kind, snapshot)
        after = self._apply(
            state, sb.MarkResumed(provider_ref=ref, actor=actor, reason=reason), correlation_id=cid, at=at
        )
        # The snapshot is spent once the resume is recorded (a crash before this leaves an orphan the
        # reconciler removes). E2B resumes the paused sandbox itself: that "snapshot" is the instance.
        if snapshot.key != ref:
            self._delete_snapshot_quietly(snapshot)
        return after

    def _drive_destroy(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str
    ) -> sb.Sandbox:
        with self._failure_recorded(state, cid, reason, at, actor, "destroy"):
            self.provider.destroy(state.id, state.provider_ref)
            if state.snapshot_key:
                self.provider.delete_snapshot(
                    SnapshotInfo(state.snapshot_key, state.snapshot_sha256, state.snapshot_bytes)
                )
        return self._apply(state, sb.MarkDestroyed(actor=actor, reason=reason), correlation_id=cid, at=at)

    def _delete_snapshot_quietly(self, snapshot: SnapshotInfo) -> None:
        try:
            self.provider.delete_snapshot(snapshot)
        except Exception as exc:
            log.warning(
                "could not delete superseded snapshot %s (the reconciler will): %s", snapshot.key, exc
            )

    @contextmanager
    def _failure_recorded(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str, action: str
    ) -> Iterator[None]:
        """A failed side effect gets an outcome too, so no intent is left without one:

        * another deployment's instance (ForeignSandbox): this record is expired with reason
          ``foreign_deployment``; the instance is theirs and was not touched (see docs/design-notes.md);
        * the provider lost the sandbox: expired (``provider_lost``, SandboxExpired) unless a resume's
          snapshot verifies (then suspended again);
        * any other error (a ProviderError, or anything else: an OSError from an unusable snapshot
          directory): back to the stable state the intent left (a destroy has none: it stays leased and
          the sweep retries it), raised as a SandboxError with one line.

        A BaseException (KeyboardInterrupt, SystemExit) records nothing: the lease lets the sweep finish.
        """
        try:
            yield
        except ForeignSandbox as exc:
            self._record_failure(state, sb.MarkLost(detail=str(exc), actor=actor, reason=FOREIGN), cid, at)
            raise
        except ProviderLost as exc:  # expired only if the snapshot is gone too (core/outcomes.py)
            lost = outcomes.resume_loss(self, state, exc, actor, reason)
            self._record_failure(state, lost, cid, at)
            raise outcomes.loss_error(state, lost, exc, self.clock()) from exc
        except Exception as exc:
            back = lc.destination("mark_failed", state.status)
            recorded = back is not None and self._record_failure(
                state, sb.MarkFailed(error=_one_line(exc), actor=actor, reason=reason), cid, at
            )
            if isinstance(exc, SandboxError):
                raise
            left = f"it is {back} again" if recorded else "the sweep will finish it once its lease runs out"
            raise SideEffectFailed(state.id, action, exc, left) from exc

    def _record_failure(self, state: sb.Sandbox, cmd: sb.Command, cid: str, at: datetime | None) -> bool:
        """Append a failure outcome; False when it could not be (the lease then lets the sweep decide)."""
        try:
            self._apply(state, cmd, correlation_id=cid, at=at)
        except (ConcurrencyError, StoreError, SandboxError) as exc:
            log.warning("could not record the failure of sandbox %s (its lease will): %s", state.id, exc)
            return False
        return True

    # ------------------------------------------------------------------------------------ commands

    def create(
        self,
        kind: str,
        conversation_id: str | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str | None = None,
        reason: str = "user",
        admit: bool = True,
    ) -> SandboxRow:
        """Create a sandbox. When the fleet is full, an idle sandbox is suspended to make room, or the
        call waits for one (``SANDBOX_CAPACITY_WAIT_MS``), then raises CapacityExceeded; with
        ``admit=False`` (the warm pool) it raises the store's CapacityRefused at once instead."""
        kind_spec(kind)
        # A retried create with the same key lands on the same stream and is a no-op there: it returns
        # the first call's sandbox as it is now (creating, idle, suspended, expired...) and runs no side
        # effect, since the first call (or the sweep, past its lease) owns the one in flight.
        sid = self.sandbox_id_for_key(idempotency_key) if idempotency_key else new_sandbox_id()
        if idempotency_key and (existing := self.store.get_sandbox(sid)) is not None:
            return existing
        cid = random_id()
        who = actor or self.actor
        cmd = sb.Create(
            kind=kind, provider=self.provider.name, conversation_id=conversation_id, actor=who, reason=reason
        )

        def attempt() -> sb.Sandbox:
            return self._apply(sb.initial(sid), cmd, correlation_id=cid, idempotency_key=idempotency_key)

        try:
            state = self._admission.admit(kind, attempt, actor=who) if admit else attempt()
        except _Duplicate:
            return self.get(sid)
        except ConcurrencyError:
            if idempotency_key and self.store.get_sandbox(sid) is not None:
                return self.get(sid)
            if conversation_id is not None:
                live = self.store.find_live(conversation_id, kind)
                if live is not None:
                    raise SandboxBusy(
                        live.id, live.state, f"conversation {conversation_id} already has it"
                    ) from None
            raise
        self.drive(state, cid, reason, actor=who)
        return self.get(sid)

    @staticmethod
    def sandbox_id_for_key(idempotency_key: str) -> str:
        """The sandbox id a create with this idempotency key gets (every retry lands on it)."""
        import hashlib  # here: an exec or an ls hashes nothing of its own

        return hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]

    def suspend(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        cid, who = random_id(), actor or self.actor
        _, state = self._run(
            sandbox_id,
            lambda s: sb.RequestSuspend(
                actor=who, reason=reason, running_processes=self._stopping_processes(s)
            ),
            cid,
        )
        self.drive(state, cid, reason, actor=who)
        return self.get(sandbox_id)

    def resume(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        """Bring a suspended sandbox back. One that is already live is left as it is (success); one that
        another caller is resuming or creating is waited for (up to ``busy_wait``)."""
        self._live(sandbox_id, reason=reason, actor=actor or self.actor)
        return self.get(sandbox_id)

    def destroy(
        self, sandbox_id: str, *, reason: str = "user", actor: str | None = None, version: int | None = None
    ) -> SandboxRow:
        """``version`` (the warm pool's): only the sandbox as it was seen at that version, with no call in
        flight on it; else ConcurrencyError or SandboxLeased, and nothing written (a claim wins)."""
        cid, who = random_id(), actor or self.actor
        state = self.load(sandbox_id)
        if version is not None and state.version != version:
            raise ConcurrencyError(sandbox_id, version, "it changed since it was seen")
        if state.status == lc.EXPIRED:
            return self.get(sandbox_id)
        if version is not None:
            state = self._apply(
                state, sb.Destroy(actor=who, reason=reason), correlation_id=cid, unleased=True
            )
        elif state.status != lc.DESTROYING:
            _, state = self._run(sandbox_id, lambda s: sb.Destroy(actor=who, reason=reason), cid)
        self.drive(state, cid, reason, actor=who)
        return self.get(sandbox_id)

    def touch(self, sandbox_id: str, *, actor: str | None = None, count: int = 1) -> SandboxRow:
        window = self.policy.activity_window
        self._run(sandbox_id, lambda s: sb.Touch(window=window, count=count, actor=actor or self.actor))
        return self.get(sandbox_id)

    # ----------------------------------------------------------------------------------- data plane

    def _settled(self, sandbox_id: str, wait: float | None = None) -> sb.Sandbox:
        """The sandbox once no create or resume of another caller is in flight on it.

        Polls the log with backoff, for at most ``wait`` seconds (default ``busy_wait``) and never past
        the in-flight step's lease: beyond it the other caller is presumed dead and the sweep takes over,
        so SandboxBusy says to come back later.
        """
        budget = self.busy_wait.total_seconds() if wait is None else wait
        give_up = time.monotonic() + max(0.0, budget)
        pause = _POLL_FIRST
        while True:
            state = self.load(sandbox_id)
            if state.status not in (lc.CREATING, lc.RESUMING, lc.SUSPENDING):
                return state
            lease_left = (
                (state.state_since + self.policy.lease - self.clock()).total_seconds()
                if state.state_since is not None
                else 0.0
            )
            left = min(give_up - time.monotonic(), lease_left)
            if left <= 0:
                raise SandboxBusy(state.id, state.status, "another caller's operation is still in flight")
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)

    def _live(
        self, sandbox_id: str, *, reason: str = "user", actor: str | None = None, wait: float | None = None
    ) -> sb.Sandbox:
        """A sandbox with live compute: waits out another caller's create/resume/suspend, resumes it if it
        is suspended, and is a no-op when it is live already."""
        who = actor or self.actor
        for _ in range(_MAX_RACES):
            state = self._settled(sandbox_id, wait)
            if state.status == lc.EXPIRED:
                raise SandboxExpired(state.id, state.expired_at, state.expired_reason)
            if state.status in lc.LIVE and state.provider_ref is not None:
                return state
            if state.status != lc.SUSPENDED:
                raise SandboxBusy(state.id, state.status)  # destroying
            cid = random_id()
            try:
                state = self._resume_admitted(state, who, reason, cid)
            except ConcurrencyError:
                continue  # someone else moved it (most likely began resuming it): wait for that
            return self.drive(state, cid, reason, actor=who)
        raise SandboxBusy(sandbox_id, "contended", "too many concurrent writers")

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between the activity records of a call in flight (core/inflight.py)."""
        return inflight.heartbeat_interval(self)

    @in_sandbox_context
    def _on_live(
        self,
        sandbox_id: str,
        call: Callable[[str], T],
        wait: float | None = None,
        *,
        busy_for: float = _FILE_CALL_BEAT_S,
    ) -> T:
        """Record activity, then run ``call(provider_ref)`` on the live sandbox, recording activity
        while it runs (a heartbeat, for at most ``busy_for`` seconds). If the provider says the sandbox is
        gone (a container removed behind our back), the sandbox is marked lost at once instead of
        pretending to be idle until a timer trips over it."""
        # The lease (taken first, so a capacity eviction either is seen by the load below or waits for
        # the call to end) keeps the sandbox from being evicted under the call (core/inflight.py).
        before_call = (self.busy_wait if wait is None else timedelta(seconds=wait)) + self.capacity.wait
        with inflight.lease(self, sandbox_id, busy_for + before_call.total_seconds()):
            state = self._live(sandbox_id, wait=wait)
            # A racer's write is itself activity (or a state change the provider call will run into), so
            # a lost race here loses nothing worth a retry.
            with suppress(ConcurrencyError):
                state = self._apply(state, sb.Touch(window=self.policy.activity_window, actor=self.actor))
            assert state.provider_ref is not None
            return self._call_live(state, call, busy_for)

    def _call_live(self, state: sb.Sandbox, call: Callable[[str], T], busy_for: float) -> T:
        """``call(provider_ref)`` with the heartbeat; a provider saying the sandbox is gone marks it lost."""
        assert state.provider_ref is not None
        try:
            with inflight.heartbeat(self, state.id, busy_for):
                return call(state.provider_ref)
        except ProviderLost as exc:
            try:
                self._apply(state, sb.MarkLost(detail=str(exc), actor=self.actor))
            except ConcurrencyError:
                raise exc from None  # it moved on meanwhile (suspended, destroyed): not ours to judge
            raise SandboxExpired(state.id, self.clock(), "provider_lost") from exc
        except ForeignSandbox as exc:
            with suppress(ConcurrencyError):
                self._apply(state, sb.MarkLost(detail=str(exc), actor=self.actor, reason=FOREIGN))
            raise

    def exec(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run ``command`` (an argv list, or a string run by ``bash -lc``), resuming the sandbox if it is
        suspended and waiting (up to ``wait`` seconds, default ``busy_wait``) for another caller's
        resume or create to finish. While it runs it counts as activity (the idle timer waits).

        ``on_stdout``/``on_stderr`` receive the output as it arrives, in ``bytes`` chunks, from a
        provider thread. The result keeps at most ``max_output_bytes`` per stream (default: the
        provider's bound, 1 MiB) with ``truncated`` set past it; the callbacks get everything. A timeout
        raises ExecTimeout carrying the output printed until the kill; ``check=True`` raises
        CommandFailed for a non-zero exit.
        """
        argv = _argv(command)
        # Only the options asked for reach the provider: one written against the port before streaming
        # keeps working for callers who do not stream.
        stream: dict[str, Any] = {}
        if on_stdout is not None:
            stream["on_stdout"] = on_stdout
        if on_stderr is not None:
            stream["on_stderr"] = on_stderr
        if max_output_bytes is not None:
            if max_output_bytes < 0:
                raise ValueError(f"max_output_bytes must be >= 0, got {max_output_bytes!r}")
            stream["max_output_bytes"] = max_output_bytes
        result = self._on_live(
            sandbox_id,
            lambda ref: self.provider.exec(ref, argv, timeout=timeout, env=env, cwd=cwd, **stream),
            wait,
            busy_for=timeout + _HEARTBEAT_GRACE_S,
        )
        if check and result.exit_code != 0:
            raise CommandFailed(
                result.exit_code, result.stderr_bytes, command=shlex.join(argv), stdout=result.stdout_bytes
            )
        return result

    def exec_stream(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecStream:
        """``for stream, chunk in service.exec_stream(id, cmd): ...`` (``stream`` is "stdout" or
        "stderr"), then ``.result``; see :class:`~sandbox_lifecycle.core.streaming.ExecStream`."""
        return ExecStream(
            lambda out, err: self.exec(
                sandbox_id,
                command,
                timeout=timeout,
                env=env,
                cwd=cwd,
                wait=wait,
                on_stdout=out,
                on_stderr=err,
                max_output_bytes=max_output_bytes,
                check=check,
            )
        )

    def write_file(self, sandbox_id: str, path: str, data: bytes) -> None:
        self._on_live(sandbox_id, lambda ref: self.provider.write_file(ref, path, data))

    def read_file(self, sandbox_id: str, path: str) -> bytes:
        return self._on_live(sandbox_id, lambda ref: self.provider.read_file(ref, path))

    def write_files(self, sandbox_id: str, files: Mapping[str, bytes]) -> None:
        """Write several whole files in one provider call (paths relative to the kind's workdir)."""
        files = dict(files)  # a caller's mapping may change while a worker thread reads it
        self._on_live(sandbox_id, lambda ref: self.provider.write_files(ref, files))

    def remove(self, sandbox_id: str, path: str) -> None:
        """Remove a file or a directory with all it holds; a missing path is success."""
        self._on_live(sandbox_id, lambda ref: self.provider.remove(ref, path))

    def list_dir(self, sandbox_id: str, path: str = ".") -> builtins.list[FileEntry]:
        """The entries of a sandbox directory (``list`` is taken: it lists sandboxes)."""
        return self._on_live(sandbox_id, lambda ref: self.provider.list_dir(ref, path))

    def exists(self, sandbox_id: str, path: str) -> bool:
        return self._on_live(sandbox_id, lambda ref: self.provider.exists(ref, path))

    def upload_dir(self, sandbox_id: str, local_dir: str, remote_dir: str) -> TransferReport:
        """Copy a local directory's contents into the sandbox, streamed (see SandboxProvider.upload_dir)."""
        return self._on_live(sandbox_id, lambda ref: self.provider.upload_dir(ref, local_dir, remote_dir))

    def download_dir(self, sandbox_id: str, remote_dir: str, local_dir: str) -> TransferReport:
        """Copy a sandbox directory's contents into a local one, streamed; what is unsafe to write there
        (links leaving it, devices, setuid bits) is left out and named in the report."""
        return self._on_live(sandbox_id, lambda ref: self.provider.download_dir(ref, remote_dir, local_dir))

    # --------------------------------------------------------------------------------------- turns

    @contextmanager
    def turn(
        self, conversation_id: str, kind: str, *, keep_warm: bool = False, actor: str | None = None
    ) -> Iterator[TurnHandle]:
        """Create or resume the conversation's sandbox, yield it, suspend it on exit (also on error)."""
        kind_spec(kind)
        turn_id = random_id()
        cid = turn_id
        who = actor or self.actor
        row = self.store.find_live(conversation_id, kind)
        sandbox_id = (
            row.id
            if row is not None
            else self.pools.claim(kind, conversation_id, actor=who, correlation_id=cid)
            or self.create(kind, conversation_id, actor=who, reason="turn_start").id
        )
        for _ in range(_MAX_RACES):
            state = self.load(sandbox_id)
            if state.status in (lc.CREATING, lc.SUSPENDING, lc.RESUMING):
                # Between its create (or resume) and its turn the sandbox was idle for a moment, and a
                # caller short of capacity may have suspended it: wait that out, then resume it.
                state = self._settled(sandbox_id)
            if state.status == lc.SUSPENDED:
                try:
                    state = self._resume_admitted(state, who, "turn_start", cid)
                except ConcurrencyError:
                    continue
                state = self.drive(state, cid, "turn_start", actor=who)
            try:
                state = self._apply(state, sb.StartTurn(turn_id=turn_id, actor=who), correlation_id=cid)
                break
            except ConcurrencyError:
                continue
        else:
            raise SandboxBusy(sandbox_id, "contended", "too many concurrent turns")
        stopped = (
            ()
            if self.capabilities.pause_keeps_processes
            else tuple(map(from_record, state.stopped_processes))
        )
        try:
            yield TurnHandle(self, sandbox_id, kind, turn_id, stopped)
        finally:
            self._end_turn(sandbox_id, turn_id, keep_warm, who, cid)

    def _end_turn(self, sandbox_id: str, turn_id: str, keep_warm: bool, actor: str, cid: str) -> None:
        for _ in range(_MAX_RACES):
            state = self.load(sandbox_id)
            if state.status != lc.RUNNING or state.turn_id != turn_id:
                # The idle timer or an operator already moved it on; nothing of ours to end.
                return
            try:
                stopping = None if keep_warm else self._stopping_processes(state)
                state = self._apply(
                    state,
                    sb.EndTurn(
                        turn_id=turn_id, suspend=not keep_warm, actor=actor, running_processes=stopping
                    ),
                    correlation_id=cid,
                )
                break
            except ConcurrencyError:
                continue
        else:
            return  # others keep writing to it; whatever they do, this turn's end is not theirs to drive
        self.drive(state, cid, "turn_end", actor=actor)

    # ------------------------------------------------------------------------ timers and the sweep

    def fire_due(self, now: datetime | None = None, *, limit: int = 1000) -> SweepReport:
        """Fire every deadline due at ``now``: idle → suspend, retention → GC, lease → recovery."""
        return self._sweeper.fire_due(now, limit=limit)

    def reconcile(self, now: datetime | None = None) -> SweepReport:
        """Re-drive stuck transitions, then remove provider resources no live sandbox owns."""
        return self._sweeper.reconcile(now)

    def sweep(self, now: datetime | None = None) -> SweepReport:
        report = self._sweeper.sweep(now)
        report.fired.extend(self.maintain_pools())
        return report

    def maintain_pools(self) -> builtins.list[str]:
        """Top each kind's warm pool up to its size while there is room; drain what exceeds it."""
        return self.pools.maintain()

    def _resume_admitted(self, state: sb.Sandbox, actor: str, reason: str, cid: str) -> sb.Sandbox:
        """Append the resume intent once the fleet has room for it (see ``create``)."""
        assert state.kind is not None
        return self._admission.admit(
            state.kind,
            lambda: self._apply(state, sb.RequestResume(actor=actor, reason=reason), correlation_id=cid),
            actor=actor,
        )

    # ------------------------------------------------------------------- background processes and ports

    @property
    def capabilities(self) -> ProviderCapabilities:
        """The provider's capabilities (a provider that declares none is assumed to have none)."""
        found = getattr(self.provider, "capabilities", None)
        return found if isinstance(found, ProviderCapabilities) else _NO_CAPABILITIES

    def _stopping_processes(self, state: sb.Sandbox) -> builtins.list[dict[str, Any]] | None:
        """The running background processes a suspend of ``state`` would stop, as recorded on the
        suspend's events; None where the provider's pause keeps them (E2B) or nothing can be asked.
        A failure to list them never blocks the suspend (it is logged, and nothing is recorded)."""
        keeps = self.capabilities.pause_keeps_processes
        if keeps or state.provider_ref is None or state.status not in lc.LIVE:
            return None
        try:
            running = [as_record(p) for p in self.provider.processes(state.provider_ref) if p.running]
        except Exception as exc:
            log.warning("could not list the background processes of sandbox %s: %s", state.id, exc)
            return None
        return running or None

    def start(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        survive_suspend: bool = False,
    ) -> Process:
        """Start a background process (an argv list, or a string run by ``bash -lc``) and return its
        handle at once. It runs on after this call and after this process. Its output counts as activity
        while it moves (see ``last_activity``). ``survive_suspend=True`` refuses (Unsupported) on a
        provider whose suspend stops processes (Docker): there, restart them from the turn's
        ``stopped_processes``."""
        if survive_suspend and not self.capabilities.pause_keeps_processes:
            raise Unsupported(
                self.provider.name,
                "background processes that survive a suspend",
                "a suspend stops them; the next turn's stopped_processes lists them to restart",
            )
        argv = _argv(command)
        info = self._on_live(
            sandbox_id, lambda ref: self.provider.start(ref, argv, env=env, cwd=cwd), wait, busy_for=60.0
        )
        return Process(self, sandbox_id, info)

    def processes(self, sandbox_id: str) -> builtins.list[ProcessInfo]:
        """The background processes of the sandbox's current instance, running or ended, oldest first."""
        return self._on_live(sandbox_id, lambda ref: self.provider.processes(ref))

    def process(self, sandbox_id: str, pid: str) -> Process:
        """The handle of a background process by its id (ProcessNotFound when there is none)."""
        for info in self.processes(sandbox_id):
            if info.id == pid:
                return Process(self, sandbox_id, info)
        raise ProcessNotFound(sandbox_id, pid)

    def process_logs(self, sandbox_id: str, pid: str) -> ProcessLogs:
        out, err = self._on_process(sandbox_id, pid, lambda ref: self.provider.process_output(ref, pid))
        return ProcessLogs(out, err)

    def _on_process(self, sandbox_id: str, pid: str, call: Callable[[str], T], busy_for: float = 60.0) -> T:
        """``_on_live`` for a call about one process: ProcessNotFound names the sandbox, not the ref."""
        try:
            return self._on_live(sandbox_id, call, busy_for=busy_for)
        except ProcessNotFound:
            raise ProcessNotFound(sandbox_id, pid) from None

    def wait_process(self, sandbox_id: str, pid: str, timeout: float = DEFAULT_WAIT_S) -> int:
        """The process's exit code once it ends; TimeoutError when it still runs after ``timeout``."""
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        return self._on_process(
            sandbox_id,
            pid,
            lambda ref: self.provider.wait_process(ref, pid, timeout),
            busy_for=timeout + _HEARTBEAT_GRACE_S,
        )

    def kill_process(self, sandbox_id: str, pid: str) -> None:
        self._on_process(sandbox_id, pid, lambda ref: self.provider.kill_process(ref, pid))

    def url(self, sandbox_id: str, port: int) -> str:
        """A URL on which this host reaches a server listening on ``port`` in the sandbox; Unsupported
        on a provider without ports."""
        if not self.capabilities.ports:
            raise Unsupported(self.provider.name, "reaching a port in the sandbox (url)")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port!r}")
        return self._on_live(sandbox_id, lambda ref: self.provider.url(ref, port))


def _argv(command: Sequence[str] | str) -> list[str]:
    # A string is a shell command line, as an agent writes one; a list is an argv, run as it is.
    return ["bash", "-lc", command] if isinstance(command, str) else list(command)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if not isinstance(exc, SandboxError) else first


@value_class
class TurnHandle(FieldValues):
    """The sandbox of the turn in progress, with the service's calls bound to it."""

    service: SandboxService
    id: str
    kind: str
    turn_id: str
    # The background processes the last suspend stopped (on a provider whose suspend stops them), so the
    # turn can start them again: ``for p in sbx.stopped_processes: sbx.start(list(p.command), cwd=p.cwd)``.
    stopped_processes: tuple[ProcessInfo, ...] = ()

    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecResult:
        """See :meth:`SandboxService.exec`."""
        return self.service.exec(
            self.id,
            command,
            timeout=timeout,
            env=env,
            cwd=cwd,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            max_output_bytes=max_output_bytes,
            check=check,
        )

    def exec_stream(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecStream:
        """``for stream, chunk in sbx.exec_stream(cmd): ...``; see :meth:`SandboxService.exec_stream`."""
        return self.service.exec_stream(
            self.id,
            command,
            timeout=timeout,
            env=env,
            cwd=cwd,
            max_output_bytes=max_output_bytes,
            check=check,
        )

    def write_file(self, path: str, data: bytes | str) -> None:
        self.service.write_file(self.id, path, data.encode() if isinstance(data, str) else data)

    def read_file(self, path: str) -> bytes:
        return self.service.read_file(self.id, path)

    def write_files(self, files: Mapping[str, bytes | str]) -> None:
        self.service.write_files(
            self.id, {p: d.encode() if isinstance(d, str) else d for p, d in files.items()}
        )

    def remove(self, path: str) -> None:
        self.service.remove(self.id, path)

    def exists(self, path: str) -> bool:
        return self.service.exists(self.id, path)

    def upload_dir(self, local_dir: str | os.PathLike[str], remote_dir: str) -> TransferReport:
        return self.service.upload_dir(self.id, os.fspath(local_dir), remote_dir)

    def download_dir(self, remote_dir: str, local_dir: str | os.PathLike[str]) -> TransferReport:
        return self.service.download_dir(self.id, remote_dir, os.fspath(local_dir))

    @property
    def git(self) -> Git:
        """Git in the kind's workdir; ``sbx.git.at(path)`` for another repository."""
        from sandbox_lifecycle.core.git import Git

        return Git(self)

    def list(self, path: str = ".") -> builtins.list[FileEntry]:
        """The entries of a sandbox directory (name, type, size), sorted by name."""
        return self.service.list_dir(self.id, path)

    def start(
        self,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        survive_suspend: bool = False,
    ) -> Process:
        """See :meth:`SandboxService.start`."""
        return self.service.start(self.id, command, env=env, cwd=cwd, survive_suspend=survive_suspend)

    def processes(self) -> builtins.list[ProcessInfo]:
        return self.service.processes(self.id)

    def url(self, port: int) -> str:
        """See :meth:`SandboxService.url`."""
        return self.service.url(self.id, port)
