"""The application service: the only place that sequences side effects.

Every side effect follows the same three steps: append an intent (with the expected version, so a
racer loses), call the provider with a name derived from the intent (so a retry is idempotent),
append the outcome. A crash between the steps leaves a transitional state whose lease deadline
lets the sweep re-drive it from provider reality (``reconcile``).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import (
    ConcurrencyError,
    ProviderError,
    ProviderLost,
    SandboxBusy,
    SandboxError,
    SandboxExpired,
    SandboxNotFound,
)
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import EventStore, ExecResult, SandboxProvider, SnapshotInfo
from sandbox_lifecycle.core.projection import IDLE, LEASE, Policy, project
from sandbox_lifecycle.core.replay import HistoryEntry, history
from sandbox_lifecycle.events.codec import decode, encode
from sandbox_lifecycle.events.records import Deadline, SandboxRow

log = logging.getLogger("sandbox_lifecycle")

T = TypeVar("T")

# A racer that loses an append reloads and decides again; this bounds how often.
_MAX_RACES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_sandbox_id() -> str:
    return uuid.uuid4().hex[:16]


class _Duplicate(Exception):
    """An append whose idempotency key was already used: nothing was written."""


@dataclass(frozen=True, slots=True)
class SweepReport:
    fired: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


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
    ) -> None:
        self.sweep_workers = sweep_workers
        self.store = store
        self.provider = provider
        self.policy = policy or Policy()
        self.clock = clock
        self.actor = actor

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
    ) -> sb.Sandbox:
        """Decide and append at the version ``state`` was loaded at. ConcurrencyError if a racer won.

        ``at`` is a floor for the event time: a sweep run for a moment in the future (``--now``) stamps
        its outcomes no earlier than its triggers, so a history never runs backwards.
        """
        now = self.clock()
        events = sb.decide(state, cmd, now if at is None else max(at, now))
        if not events:
            return state
        after = sb.replay(state.id, events, start=state)
        meta = {"correlation_id": correlation_id} if correlation_id else {}
        result = self.store.append(
            state.id,
            state.version,
            [encode(e, **meta) for e in events],
            idempotency_key=idempotency_key,
            projection=project(after, self.policy),
        )
        if result.duplicate:
            # The key was used before: nothing was written, so ``after`` is not what the log holds.
            raise _Duplicate(state.id)
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
        records = self.store.read_stream(sandbox_id)
        if not records:
            raise SandboxNotFound(sandbox_id)
        return history(sandbox_id, records)

    # ------------------------------------------------------------------------------------ commands

    def create(
        self,
        kind: str,
        conversation_id: str | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str | None = None,
        reason: str = "user",
    ) -> SandboxRow:
        kind_spec(kind)
        # A retried create with the same key lands on the same stream and is a no-op there: it returns
        # the first call's sandbox as it is now (creating, idle, suspended, expired...) and runs no side
        # effect, since the first call (or the sweep, past its lease) owns the one in flight.
        sid = self.sandbox_id_for_key(idempotency_key) if idempotency_key else new_sandbox_id()
        if idempotency_key and (existing := self.store.get_sandbox(sid)) is not None:
            return existing
        cid = uuid.uuid4().hex
        cmd = sb.Create(
            kind=kind,
            provider=self.provider.name,
            conversation_id=conversation_id,
            actor=actor or self.actor,
            reason=reason,
        )
        try:
            state = self._apply(sb.initial(sid), cmd, correlation_id=cid, idempotency_key=idempotency_key)
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
        self._drive_create(state, cid, reason)
        return self.get(sid)

    @staticmethod
    def sandbox_id_for_key(idempotency_key: str) -> str:
        """The sandbox id a create with this idempotency key gets (every retry lands on it)."""
        return hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]

    def _drive_create(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None = None
    ) -> sb.Sandbox:
        assert state.kind is not None
        with self._failure_recorded(state, cid, "provider_error", at):
            ref = self.provider.create(state.id, state.kind)
        try:
            return self._apply(
                state,
                sb.MarkReady(provider_ref=ref, actor=self.actor, reason=reason),
                correlation_id=cid,
                at=at,
            )
        except BaseException:
            # Recording failed. If the log holds the instance all the same (the sweep recorded it past the
            # lease), it is the sandbox's; otherwise it must not outlive its record (no orphan).
            if not self._log_holds(state.id, ref):
                log.warning("recording sandbox %s failed; destroying its provider sandbox", state.id)
                self.provider.destroy(state.id, ref)
            raise

    def _log_holds(self, sandbox_id: str, ref: str) -> bool:
        try:
            now = self.load(sandbox_id)
        except Exception:
            return False
        return now.provider_ref == ref and now.status not in (lc.CREATING, lc.EXPIRED)

    @contextmanager
    def _failure_recorded(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None
    ) -> Iterator[None]:
        """A failed side effect gets an outcome too: a provider that lost the sandbox expires it; any
        other provider error returns it to the stable state the intent left (the error re-raised)."""
        try:
            yield
        except ProviderLost as exc:
            raise self._mark_lost(state, exc, cid, at) from exc
        except ProviderError as exc:
            self._apply(
                state,
                sb.MarkFailed(error=str(exc), actor=self.actor, reason=reason),
                correlation_id=cid,
                at=at,
            )
            raise

    def _mark_lost(
        self, state: sb.Sandbox, exc: ProviderLost, cid: str | None = None, at: datetime | None = None
    ) -> SandboxExpired:
        """Record that the provider no longer has the sandbox; returns the error for the caller."""
        self._apply(state, sb.MarkLost(detail=str(exc), actor=self.actor), correlation_id=cid, at=at)
        return SandboxExpired(state.id, self.clock(), "provider_lost")

    def suspend(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        cid = uuid.uuid4().hex
        _, state = self._run(
            sandbox_id, lambda s: sb.RequestSuspend(actor=actor or self.actor, reason=reason), cid
        )
        self._drive_suspend(state, cid, reason)
        return self.get(sandbox_id)

    def _drive_suspend(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None = None
    ) -> sb.Sandbox:
        assert state.status == lc.SUSPENDING and state.kind and state.pending_snapshot_key
        with self._failure_recorded(state, cid, reason, at):
            info = self.provider.suspend(
                state.id, state.provider_ref or "", state.kind, state.pending_snapshot_key
            )
        previous = state.snapshot_key
        after = self._apply(
            state,
            sb.MarkSuspended(
                snapshot_key=info.key, sha256=info.sha256, bytes=info.bytes, actor=self.actor, reason=reason
            ),
            correlation_id=cid,
            at=at,
        )
        # The superseded snapshot goes only once the new one is recorded; a failure here leaves an
        # orphan for the reconciler, never a lost workspace.
        if previous and previous != info.key:
            self._delete_snapshot_quietly(SnapshotInfo(previous, state.snapshot_sha256, state.snapshot_bytes))
        return after

    def _delete_snapshot_quietly(self, snapshot: SnapshotInfo) -> None:
        try:
            self.provider.delete_snapshot(snapshot)
        except ProviderError as exc:
            log.warning(
                "could not delete superseded snapshot %s (the reconciler will): %s", snapshot.key, exc
            )

    def resume(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        cid = uuid.uuid4().hex
        _, state = self._run(
            sandbox_id, lambda s: sb.RequestResume(actor=actor or self.actor, reason=reason), cid
        )
        self._drive_resume(state, cid, reason)
        return self.get(sandbox_id)

    def _drive_resume(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None = None
    ) -> sb.Sandbox:
        assert state.status == lc.RESUMING and state.kind and state.snapshot_key
        snapshot = SnapshotInfo(state.snapshot_key, state.snapshot_sha256, state.snapshot_bytes)
        with self._failure_recorded(state, cid, reason, at):
            ref = self.provider.resume(state.id, state.kind, snapshot)
        after = self._apply(
            state,
            sb.MarkResumed(provider_ref=ref, actor=self.actor, reason=reason),
            correlation_id=cid,
            at=at,
        )
        # The snapshot is spent once the resume is recorded (a crash before this leaves an orphan the
        # reconciler removes). E2B resumes the paused sandbox itself: that "snapshot" is the instance.
        if snapshot.key != ref:
            self._delete_snapshot_quietly(snapshot)
        return after

    def destroy(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        cid = uuid.uuid4().hex
        state = self.load(sandbox_id)
        if state.status == lc.EXPIRED:
            return self.get(sandbox_id)
        if state.status != lc.DESTROYING:
            _, state = self._run(
                sandbox_id, lambda s: sb.Destroy(actor=actor or self.actor, reason=reason), cid
            )
        self._drive_destroy(state, cid, reason)
        return self.get(sandbox_id)

    def _drive_destroy(
        self, state: sb.Sandbox, cid: str, reason: str, at: datetime | None = None
    ) -> sb.Sandbox:
        self.provider.destroy(state.id, state.provider_ref)
        if state.snapshot_key:
            self.provider.delete_snapshot(
                SnapshotInfo(state.snapshot_key, state.snapshot_sha256, state.snapshot_bytes)
            )
        return self._apply(
            state, sb.MarkDestroyed(actor=self.actor, reason=reason), correlation_id=cid, at=at
        )

    def touch(self, sandbox_id: str, *, actor: str | None = None, count: int = 1) -> SandboxRow:
        window = self.policy.activity_window
        self._run(sandbox_id, lambda s: sb.Touch(window=window, count=count, actor=actor or self.actor))
        return self.get(sandbox_id)

    def _ready(self, sandbox_id: str) -> sb.Sandbox:
        """A sandbox with live compute, resuming it if it is suspended."""
        state = self.load(sandbox_id)
        if state.status == lc.SUSPENDED:
            self.resume(sandbox_id)
            state = self.load(sandbox_id)
        if state.status == lc.EXPIRED:
            raise SandboxExpired(state.id, state.expired_at, state.expired_reason)
        if state.status not in lc.LIVE or state.provider_ref is None:
            raise SandboxBusy(state.id, state.status)
        return state

    def _on_live(self, sandbox_id: str, call: Callable[[str], T]) -> T:
        """Record activity, then run ``call(provider_ref)`` on the live sandbox.

        If the provider says the sandbox is gone (a container removed behind our back), the sandbox is
        marked lost at once instead of pretending to be idle until a timer trips over it.
        """
        state = self._ready(sandbox_id)
        # A racer's write is itself activity (or a state change the provider call will run into), so
        # a lost race here loses nothing worth a retry.
        with suppress(ConcurrencyError):
            state = self._apply(state, sb.Touch(window=self.policy.activity_window, actor=self.actor))
        assert state.provider_ref is not None
        try:
            return call(state.provider_ref)
        except ProviderLost as exc:
            try:
                expired = self._mark_lost(state, exc)
            except ConcurrencyError:
                raise exc from None  # it moved on meanwhile (suspended, destroyed): not ours to judge
            raise expired from exc

    def exec(
        self,
        sandbox_id: str,
        command: Sequence[str],
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        argv = list(command)
        return self._on_live(
            sandbox_id, lambda ref: self.provider.exec(ref, argv, timeout=timeout, env=env, cwd=cwd)
        )

    def write_file(self, sandbox_id: str, path: str, data: bytes) -> None:
        self._on_live(sandbox_id, lambda ref: self.provider.write_file(ref, path, data))

    def read_file(self, sandbox_id: str, path: str) -> bytes:
        return self._on_live(sandbox_id, lambda ref: self.provider.read_file(ref, path))

    # --------------------------------------------------------------------------------------- turns

    @contextmanager
    def turn(
        self, conversation_id: str, kind: str, *, keep_warm: bool = False, actor: str | None = None
    ) -> Iterator[TurnHandle]:
        """Create or resume the conversation's sandbox, yield it, suspend it on exit (also on error)."""
        kind_spec(kind)
        turn_id = uuid.uuid4().hex
        cid = turn_id
        who = actor or self.actor
        row = self.store.find_live(conversation_id, kind)
        sandbox_id = (
            row.id
            if row is not None
            else self.create(kind, conversation_id, actor=who, reason="turn_start").id
        )
        for _ in range(_MAX_RACES):
            state = self.load(sandbox_id)
            if state.status == lc.SUSPENDED:
                try:
                    state = self._apply(
                        state, sb.RequestResume(actor=who, reason="turn_start"), correlation_id=cid
                    )
                except ConcurrencyError:
                    continue
                state = self._drive_resume(state, cid, "turn_start")
            try:
                state = self._apply(state, sb.StartTurn(turn_id=turn_id, actor=who), correlation_id=cid)
                break
            except ConcurrencyError:
                continue
        else:
            raise SandboxBusy(sandbox_id, "contended", "too many concurrent turns")
        try:
            yield TurnHandle(self, sandbox_id, kind, turn_id)
        finally:
            self._end_turn(sandbox_id, turn_id, keep_warm, who, cid)

    def _end_turn(self, sandbox_id: str, turn_id: str, keep_warm: bool, actor: str, cid: str) -> None:
        for _ in range(_MAX_RACES):
            state = self.load(sandbox_id)
            if state.status != lc.RUNNING or state.turn_id != turn_id:
                # The idle timer or an operator already moved it on; nothing of ours to end.
                return
            try:
                state = self._apply(
                    state, sb.EndTurn(turn_id=turn_id, suspend=not keep_warm, actor=actor), correlation_id=cid
                )
                break
            except ConcurrencyError:
                continue
        if state.status == lc.SUSPENDING:
            self._drive_suspend(state, cid, "turn_end")

    # -------------------------------------------------------------------------------------- timers

    def fire_due(self, now: datetime | None = None, *, limit: int = 1000) -> SweepReport:
        """Fire every deadline due at ``now``: idle → suspend, retention → GC, lease → reconcile."""
        when = now or self.clock()
        report = SweepReport()

        def one(deadline: Deadline) -> None:
            sid = deadline.sandbox_id
            try:
                if deadline.kind == LEASE:
                    if self._recover(sid, when):
                        report.recovered.append(sid)
                elif self._fire(sid, deadline.kind, deadline.version, when):
                    report.fired.append(f"{sid}:{deadline.kind}")
            except SandboxError as exc:
                # One sandbox's failure must not starve the others; its lease re-drives it later.
                report.errors.append(f"{sid}: {exc}")
                log.warning("timer %s of %s failed: %s", deadline.kind, sid, exc)

        due = self.store.due_deadlines(when, limit=limit)
        if self.sweep_workers <= 1 or len(due) <= 1:
            for deadline in due:
                one(deadline)
        else:
            # Side effects (a snapshot upload, a pause) take seconds each: a sweep that finds many due
            # sandboxes must not do them one after another.
            with ThreadPoolExecutor(self.sweep_workers, thread_name_prefix="sweep") as pool:
                list(pool.map(one, due))
        return report

    def _fire(self, sid: str, kind: str, seen_version: int, now: datetime) -> bool:
        state = self.load(sid)
        if state.version != seen_version:
            return False  # moved on since the deadline was read; its new deadline is armed
        cid = uuid.uuid4().hex
        cmd: sb.Command = (
            sb.FireIdleTimeout(timeout=self.policy.idle_timeout)
            if kind == IDLE
            else sb.FireRetention(retention=self.policy.retention)
        )
        events = sb.decide(state, cmd, now)
        if not events:
            # A stale timer (settings changed): re-arm from the current policy.
            self.store.write_projection(project(state, self.policy))
            return False
        try:
            after = self._apply(state, cmd, correlation_id=cid, at=now)
        except ConcurrencyError:
            return False  # another scheduler won; exactly one transition happens
        if after.status == lc.SUSPENDING:
            self._drive_suspend(after, cid, cmd.reason, at=now)
        elif after.status == lc.DESTROYING:
            self._drive_destroy(after, cid, cmd.reason, at=now)
        return True

    def _recover(self, sid: str, now: datetime) -> bool:
        """Re-drive a side effect whose lease ran out, from what the provider really holds."""
        state = self.load(sid)
        if state.status not in lc.TRANSITIONAL or state.state_since is None:
            return False
        if now - state.state_since < self.policy.lease:
            return False
        cid = uuid.uuid4().hex
        log.info("recovering sandbox %s stuck in %s since %s", sid, state.status, state.state_since)
        try:
            if state.status == lc.CREATING:
                assert state.kind is not None
                inst = self.provider.instance(sid)
                if inst is not None:
                    self._apply(
                        state,
                        sb.MarkReady(provider_ref=inst.ref, actor="reconciler", reason="recovery"),
                        correlation_id=cid,
                        at=now,
                    )
                else:
                    self._apply(
                        state,
                        sb.MarkFailed(
                            error="creation interrupted before the provider had it",
                            actor="reconciler",
                            reason="recovery",
                        ),
                        correlation_id=cid,
                        at=now,
                    )
            elif state.status == lc.SUSPENDING:
                self._drive_suspend(state, cid, "recovery", at=now)
            elif state.status == lc.RESUMING:
                self._drive_resume(state, cid, "recovery", at=now)
            elif state.status == lc.DESTROYING:
                self._drive_destroy(state, cid, "recovery", at=now)
        except ConcurrencyError:
            return False
        return True

    def reconcile(self, now: datetime | None = None) -> SweepReport:
        """Re-drive stuck transitions, then remove provider resources no live sandbox owns."""
        now = now or self.clock()
        report = SweepReport()
        for row in self.store.list_sandboxes():
            if row.state in lc.TRANSITIONAL:
                try:
                    if self._recover(row.id, now):
                        report.recovered.append(row.id)
                except SandboxError as exc:
                    report.errors.append(f"{row.id}: {exc}")
        try:
            self._remove_orphans(report)
        except SandboxError as exc:
            report.errors.append(f"orphan sweep: {exc}")
        return report

    def _remove_orphans(self, report: SweepReport) -> None:
        for inst in self.provider.list_instances():
            owner = self.store.get_sandbox(inst.sandbox_id)
            orphan = (
                owner is None
                or owner.state == lc.EXPIRED
                or (owner.state == lc.SUSPENDED and inst.status == "running")
            )
            if orphan and self._still_orphan(inst.sandbox_id):
                self.provider.destroy(inst.sandbox_id, inst.ref)
                was = owner.state if owner else "unknown"
                msg = f"removed orphan instance {inst.ref} of sandbox {inst.sandbox_id} ({was})"
                log.info(msg)
                report.removed.append(msg)
        for sid, snap in self.provider.list_snapshots():
            state = self.load(sid) if self.store.get_sandbox(sid) is not None else None
            keep = (
                state is not None
                and state.status != lc.EXPIRED
                and snap.key in {state.snapshot_key, state.pending_snapshot_key}
            )
            if not keep:
                self.provider.delete_snapshot(snap)
                was = state.status if state else "unknown"
                msg = f"removed orphan snapshot {snap.key} of sandbox {sid} ({was})"
                log.info(msg)
                report.removed.append(msg)

    def _still_orphan(self, sid: str) -> bool:
        # Re-read right before removing: a create or resume may have committed since the listing.
        row = self.store.get_sandbox(sid)
        return row is None or row.state in (lc.EXPIRED, lc.SUSPENDED)

    def sweep(self, now: datetime | None = None) -> SweepReport:
        fired = self.fire_due(now)
        rec = self.reconcile(now)
        return SweepReport(
            fired=fired.fired,
            recovered=fired.recovered + rec.recovered,
            removed=rec.removed,
            errors=fired.errors + rec.errors,
        )


@dataclass(frozen=True, slots=True)
class TurnHandle:
    service: SandboxService
    id: str
    kind: str
    turn_id: str

    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        argv = ["bash", "-lc", command] if isinstance(command, str) else list(command)
        return self.service.exec(self.id, argv, timeout=timeout, env=env, cwd=cwd)

    def write_file(self, path: str, data: bytes | str) -> None:
        self.service.write_file(self.id, path, data.encode() if isinstance(data, str) else data)

    def read_file(self, path: str) -> bytes:
        return self.service.read_file(self.id, path)
