"""The one writer's kernel: load a sandbox from the log, append a decision, drive a side effect.

Every side effect follows the same three steps: append an intent (with the expected version, so a
racer loses), call the provider with a name derived from the intent (so a retry is idempotent),
append the outcome. ``Kernel.drive`` is the one place that takes a transitional state to its outcome,
for a command, a turn, a timer and the sweep's recovery alike. A crash between the steps leaves a
transitional state whose lease deadline lets the sweep (``core/recovery.py``) re-drive it from
provider reality.

The service (``core/service.py``) and its helpers (admission for capacity, the warm pool, the sweep,
calls on a live sandbox) all sit on this kernel and reach nothing else of one another.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar, cast, overload

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import outcomes
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import (
    ConcurrencyError,
    ForeignSandbox,
    ProviderLost,
    SandboxBusy,
    SandboxError,
    SandboxNotFound,
    SideEffectFailed,
    StoreError,
)
from sandbox_lifecycle.core.observe import (
    NULL_OBSERVER,
    ObservedProvider,
    Observer,
    SafeObserver,
    in_log_context,
)
from sandbox_lifecycle.core.ports import EventStore, ProviderCapabilities, SandboxProvider, SnapshotInfo
from sandbox_lifecycle.core.processes import as_record
from sandbox_lifecycle.core.projection import Policy, project
from sandbox_lifecycle.core.usage import Usage, measure
from sandbox_lifecycle.events.codec import decode, encode

__all__ = ["DRIVERS", "FOREIGN", "MAX_RACES", "RECONCILER", "Duplicate", "Kernel", "Shared", "one_line"]

log = logging.getLogger("sandbox_lifecycle")

# A racer that loses an append reloads and decides again; this bounds how often.
MAX_RACES = 5
# The expiry reason of a sandbox whose provider instance belongs to another deployment.
FOREIGN = "foreign_deployment"
# The actor of the outcomes the sweep appends for side effects whose lease ran out: it decided them
# from provider reality, not on behalf of whoever appended the intent (that actor is on the intent).
RECONCILER = "reconciler"

# How many sandboxes ``load_latest`` remembers (LRU): a few hundred bytes each.
_REMEMBERED = 1024

# What a provider without a ``capabilities`` attribute is taken to support: nothing optional.
_NO_CAPABILITIES = ProviderCapabilities(
    isolation="unknown", pause_keeps_processes=False, egress_allow_list=False, ports=False
)


V = TypeVar("V")


class Shared(Generic[V]):
    """A kernel attribute shown as one of its owner's own (``owner.kernel.<name>``), read and written
    through: a change made on the service (a test's clock, the pool sizes) is seen by every helper."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Shared[V]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> V: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> V | Shared[V]:
        if obj is None:
            return self
        return cast(V, getattr(cast(Any, obj).kernel, self.name))

    def __set__(self, obj: object, value: V) -> None:
        setattr(cast(Any, obj).kernel, self.name, value)


class Duplicate(Exception):
    """An append whose idempotency key was already used: nothing was written."""


# The driver of each transitional state; a test checks it names every one of ``lc.TRANSITIONAL``.
_Driver = Callable[["Kernel", sb.Sandbox, str, str, "datetime | None", str, bool], sb.Sandbox]


class Kernel:
    """The log, the provider and the rules that bind them; shared by the service and its helpers.

    ``store``, ``provider``, ``policy``, ``clock``, ``actor``, ``capacity`` and ``observer`` are plain
    attributes: the service exposes them as its own, and a change made there is seen by every helper.
    """

    def __init__(
        self,
        store: EventStore,
        provider: SandboxProvider,
        *,
        policy: Policy,
        clock: Callable[[], datetime],
        actor: str,
        capacity: Capacity,
    ) -> None:
        self.store = store
        self.provider = provider
        self.policy = policy
        self.clock = clock
        self.actor = actor
        self.capacity = capacity
        self.observer: Observer = NULL_OBSERVER
        self._latest: OrderedDict[str, sb.Sandbox] = OrderedDict()
        self._latest_lock = threading.Lock()

    def attach_observer(self, observer: Observer) -> None:
        """Report to ``observer`` from now on; every provider call is then timed for it."""
        self.observer = SafeObserver(observer)
        self.provider = cast(SandboxProvider, ObservedProvider(self.provider, self.observer))

    # ------------------------------------------------------------------------------ loading & append

    def load(self, sandbox_id: str) -> sb.Sandbox:
        """The sandbox as its whole stream says, every event read and decoded (a corrupt one raises)."""
        records = self.store.read_stream(sandbox_id)
        if not records:
            raise SandboxNotFound(sandbox_id)
        state = sb.replay(sandbox_id, (decode(r) for r in records))
        self._remember(state)
        return state

    def load_latest(self, sandbox_id: str) -> sb.Sandbox:
        """``load`` for the data plane: the state this kernel last loaded, advanced by the events
        appended since (by anyone: they are read from the log). An exec on a sandbox with a day of
        history reads one or two events, not thousands (bench/service_exec_bench.py). The log is
        append-only, so the result is what ``load`` would return."""
        with self._latest_lock:
            known = self._latest.get(sandbox_id)
        if known is None:
            return self.load(sandbox_id)
        records = self.store.read_stream(sandbox_id, known.version)
        if not records:
            return known
        state = sb.replay(sandbox_id, (decode(r) for r in records), start=known)
        self._remember(state)
        return state

    def _remember(self, state: sb.Sandbox) -> None:
        with self._latest_lock:
            known = self._latest.get(state.id)
            if known is None or known.version <= state.version:
                self._latest[state.id] = state
            self._latest.move_to_end(state.id)
            if len(self._latest) > _REMEMBERED:
                self._latest.popitem(last=False)

    def apply(
        self,
        state: sb.Sandbox,
        cmd: sb.Command,
        *,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
        at: datetime | None = None,
        unleased: bool = False,
        usage: Usage | None = None,
    ) -> sb.Sandbox:
        """Decide and append at the version ``state`` was loaded at. ConcurrencyError if a racer won.
        ``at`` is a floor for the event time: a sweep run for a moment in the future (``--now``) stamps
        its outcomes no earlier than its triggers, so a history never runs backwards. ``unleased``: the
        store refuses (SandboxLeased) while a call in flight holds a lease on the sandbox. ``usage``:
        what the run the decision ends used, recorded in the same append (core/usage.py)."""
        now = self.clock()
        when = now if at is None else max(at, now)
        events = sb.decide(state, cmd, when)
        if not events:
            return state
        if usage is not None:
            events = [*events, usage.as_event(at=when, actor=events[-1].actor, reason=events[-1].reason)]
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
            raise Duplicate(state.id)
        if after.status != state.status:
            self.observer.transition(
                kind=after.kind, from_state=state.status, to_state=after.status, reason=cmd.reason
            )
        if usage is not None:
            self.observer.usage(kind=after.kind, usage=usage)
        return after

    def run(
        self, sandbox_id: str, make: Callable[[sb.Sandbox], sb.Command], correlation_id: str | None = None
    ) -> tuple[sb.Sandbox, sb.Sandbox]:
        """Load, decide, append; on a lost race reload and decide again. Returns (before, after)."""
        for _ in range(MAX_RACES):
            state = self.load(sandbox_id)
            try:
                return state, self.apply(state, make(state), correlation_id=correlation_id)
            except ConcurrencyError:
                continue
        raise SandboxBusy(sandbox_id, "contended", "too many concurrent writers")

    # --------------------------------------------------------------------------------- capabilities

    @property
    def capabilities(self) -> ProviderCapabilities:
        """The provider's capabilities (a provider that declares none is assumed to have none)."""
        found = getattr(self.provider, "capabilities", None)
        return found if isinstance(found, ProviderCapabilities) else _NO_CAPABILITIES

    def stopping_processes(self, state: sb.Sandbox) -> list[dict[str, Any]] | None:
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
        driver = DRIVERS.get(state.status)
        if driver is None:
            return state
        who = RECONCILER if recovery else (actor or self.actor)
        return driver(self, state, cid, reason, at, who, recovery)

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
            return self.apply(
                state,
                sb.MarkFailed(
                    error="creation interrupted before the provider had it", actor=actor, reason=reason
                ),
                correlation_id=cid,
                at=at,
            )
        try:
            return self.apply(
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
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str, recovery: bool
    ) -> sb.Sandbox:
        assert state.kind and state.pending_snapshot_key
        # Read while the instance is there to read (the suspend removes a container with its counters).
        usage = measure(self.provider, state.id, state.provider_ref)
        with self._failure_recorded(state, cid, reason, at, actor, "suspend"):
            # A snapshot stored before a failure counts.
            info = outcomes.suspend_or_stored(self.provider, state)
        previous = state.snapshot_key
        after = self.apply(
            state,
            sb.MarkSuspended(
                snapshot_key=info.key,
                sha256=info.sha256,
                bytes=info.bytes,
                actor=actor,
                reason=reason,
                running_processes=list(state.stopped_processes) or None,
                kept=self.capabilities.checkpoints,
                workspace_bytes=info.workspace_bytes,
                bytes_new=info.bytes_new,
            ),
            correlation_id=cid,
            at=at,
            usage=usage,
        )
        # The superseded snapshot goes only once the new one is recorded (unless it is a checkpoint
        # retention keeps); a failure here leaves an orphan for the reconciler, never a lost workspace.
        if previous and previous != info.key and not _kept(after, previous):
            self._delete_snapshot_quietly(SnapshotInfo(previous, state.snapshot_sha256, state.snapshot_bytes))
        return after

    def _drive_resume(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str, recovery: bool
    ) -> sb.Sandbox:
        assert state.kind and state.snapshot_key
        snapshot = SnapshotInfo(state.snapshot_key, state.snapshot_sha256, state.snapshot_bytes)
        with self._failure_recorded(state, cid, reason, at, actor, "resume"):
            # Under the policy the log gives the sandbox (core/egress.py) from the instance's start.
            ref = self.provider.resume(state.id, state.kind, snapshot, state.egress_allow)
        after = self.apply(
            state, sb.MarkResumed(provider_ref=ref, actor=actor, reason=reason), correlation_id=cid, at=at
        )
        # The snapshot is spent once the resume is recorded (a crash before this leaves an orphan the
        # reconciler removes), unless it is a checkpoint retention keeps. E2B resumes the paused sandbox
        # itself: that "snapshot" is the instance.
        if snapshot.key != ref and not _kept(after, snapshot.key):
            self._delete_snapshot_quietly(snapshot)
        return after

    def _drive_destroy(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None, actor: str, recovery: bool
    ) -> sb.Sandbox:
        # A suspended sandbox runs nothing (no ref): its last run's usage went with its suspend.
        usage = measure(self.provider, state.id, state.provider_ref)
        with self._failure_recorded(state, cid, reason, at, actor, "destroy"):
            self.provider.destroy(state.id, state.provider_ref)
            # The current snapshot and every checkpoint go with the sandbox (a fork has its own copy).
            snapshots = {
                c.snapshot_key: SnapshotInfo(c.snapshot_key, c.sha256, c.bytes) for c in state.checkpoints
            }
            if state.snapshot_key:
                snapshots[state.snapshot_key] = SnapshotInfo(
                    state.snapshot_key, state.snapshot_sha256, state.snapshot_bytes
                )
            for snapshot in snapshots.values():
                self.provider.delete_snapshot(snapshot)
        return self.apply(
            state, sb.MarkDestroyed(actor=actor, reason=reason), correlation_id=cid, at=at, usage=usage
        )

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
            lost = outcomes.resume_loss(self.provider, state, exc, actor, reason)
            self._record_failure(state, lost, cid, at)
            raise outcomes.loss_error(state, lost, exc, self.clock()) from exc
        except Exception as exc:
            back = lc.destination("mark_failed", state.status)
            recorded = back is not None and self._record_failure(
                state, sb.MarkFailed(error=one_line(exc), actor=actor, reason=reason), cid, at
            )
            if isinstance(exc, SandboxError):
                raise
            left = f"it is {back} again" if recorded else "the sweep will finish it once its lease runs out"
            raise SideEffectFailed(state.id, action, exc, left) from exc

    def _record_failure(self, state: sb.Sandbox, cmd: sb.Command, cid: str, at: datetime | None) -> bool:
        """Append a failure outcome; False when it could not be (the lease then lets the sweep decide)."""
        try:
            self.apply(state, cmd, correlation_id=cid, at=at)
        except (ConcurrencyError, StoreError, SandboxError) as exc:
            log.warning("could not record the failure of sandbox %s (its lease will): %s", state.id, exc)
            return False
        return True


# Which side effect takes each transitional state to its outcome. A state missing here would be returned
# undriven, its intent left to the lease: tests/unit/core/test_dispatch.py checks it is complete.
DRIVERS: dict[str, _Driver] = {
    lc.CREATING: Kernel._drive_create,
    lc.SUSPENDING: Kernel._drive_suspend,
    lc.RESUMING: Kernel._drive_resume,
    lc.DESTROYING: Kernel._drive_destroy,
}


def _kept(state: sb.Sandbox, key: str) -> bool:
    """Whether ``key`` is a checkpoint of ``state`` that retention keeps (not deleted on a resume)."""
    return any(c.kept and c.snapshot_key == key for c in state.checkpoints)


def one_line(exc: BaseException) -> str:
    """An error as one line for the log: its type and first line (a SandboxError speaks for itself)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if not isinstance(exc, SandboxError) else first
