"""The sweep: timers that fire, side effects re-driven past their lease, and leftovers removed.

The sweep runs unattended (cron, the scheduler), so it works sandbox by sandbox: whatever one sandbox
does wrong — a corrupt stream, a provider error, a bug — is reported with its id and the sweep goes on
to the others. It never decides an outcome itself: it hands a transitional state to
``Kernel.drive``, the same code a command runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import field
from datetime import datetime, timedelta
from typing import Literal, TypeVar, assert_never

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core import timers
from sandbox_lifecycle.core.errors import ConcurrencyError
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import RECONCILER, Kernel
from sandbox_lifecycle.core.observe import log_context
from sandbox_lifecycle.core.ports import SnapshotInfo
from sandbox_lifecycle.core.projection import IDLE, expiring, project, timer_kind
from sandbox_lifecycle.events.records import CorruptStream, Deadline, SandboxRow
from sandbox_lifecycle.events.values import FieldValues, value_class

__all__ = ["RECONCILER", "SweepReport", "Sweeper"]

log = logging.getLogger("sandbox_lifecycle")

T = TypeVar("T")

# The reason of the activity recorded when the idle timer finds a background process's output moving.
PROCESS_OUTPUT_REASON = "process_output"
# A model call through the gateway: the agent is thinking, not idle.
MODEL_CALL_REASON = "model_call"


@value_class
class SweepReport(FieldValues):
    """What one sweep did: the sandboxes whose timers fired, recovered and removed, and its errors."""

    fired: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # "<sandbox id>:<timer>" for each warning recorded (ExpiryWarned): the timer acts soon.
    warned: list[str] = field(default_factory=list)


def _describe(sandbox_id: str, exc: BaseException) -> str:
    if isinstance(exc, CorruptStream):
        # Named by stream and version, so an operator can find and repair the one bad event.
        return f"{sandbox_id}: skipped, {exc}"
    text = str(exc).strip().splitlines()
    return f"{sandbox_id}: {text[0] if text else type(exc).__name__}"


class Sweeper:
    """The sweep side of a SandboxService (its ``fire_due``, ``reconcile`` and ``sweep``)."""

    def __init__(self, kernel: Kernel, workers: int = 8) -> None:
        self.k = kernel
        # Sandboxes handled at once by one ``fire_due`` (side effects take seconds each).
        self.workers = workers

    # -------------------------------------------------------------------------------------- timers

    def fire_due(self, now: datetime | None = None, *, limit: int = 1000) -> SweepReport:
        when = now or self.k.clock()
        report = SweepReport()

        def one(deadline: Deadline) -> None:
            with log_context(sandbox_id=deadline.sandbox_id):
                handle(deadline)

        def handle(deadline: Deadline) -> None:
            sid = deadline.sandbox_id
            try:
                # Exhaustive over the timer kinds: a new kind fails mypy here (and an unknown one read
                # from the log raises), never fires as another.
                kind = timer_kind(deadline.kind)
                match kind:
                    case "lease":
                        if self._recover(sid, when):
                            report.recovered.append(sid)
                            self._lag(deadline)
                    case "checkpoint":
                        if self._collect(sid, deadline.version, when):
                            report.fired.append(f"{sid}:{deadline.kind}")
                            self._lag(deadline)
                    case "idle" | "retention" | "max_lifetime":
                        if self._fire(sid, kind, deadline.version, when):
                            report.fired.append(f"{sid}:{deadline.kind}")
                            self._lag(deadline)
                    case "warning":
                        warned = self._warn(sid, deadline.version, when)
                        report.warned.extend(f"{sid}:{timer}" for timer in warned)
                        if warned:
                            self._lag(deadline)
                    case _:
                        assert_never(kind)
            except Exception as exc:
                # One sandbox's failure must not starve the others; its lease re-drives it later.
                report.errors.append(_describe(sid, exc))
                log.warning("timer %s of %s failed: %s", deadline.kind, sid, exc)

        # One sandbox's due timers run one after another, in due order (the store's): run side by side,
        # a later one (a checkpoint collection, a warning) could append first and make an earlier one
        # (the idle suspend) lose its version race, which of the two acted being left to the threads.
        groups: dict[str, list[Deadline]] = {}
        for deadline in self.k.store.due_deadlines(when, limit=limit):
            groups.setdefault(deadline.sandbox_id, []).append(deadline)

        def each(deadlines: list[Deadline]) -> None:
            for deadline in deadlines:
                one(deadline)

        if self.workers <= 1 or len(groups) <= 1:
            for deadlines in groups.values():
                each(deadlines)
        else:
            # Side effects (a snapshot upload, a pause) take seconds each: a sweep that finds many due
            # sandboxes must not do them one after another.
            # why here: `sandboxctl exec` loads this module and never sweeps (tests/**/test_imports.py).
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.workers, thread_name_prefix="sweep") as pool:
                list(pool.map(each, groups.values()))
        return report

    def _lag(self, deadline: Deadline) -> None:
        # The service clock, not the sweep's `now`: a sweep run for a later moment (--now) is not late.
        late = (self.k.clock() - deadline.due_at).total_seconds()
        self.k.observer.timer_fired(deadline.kind, max(late, 0.0))

    def _fire(
        self, sid: str, kind: Literal["idle", "retention", "max_lifetime"], seen_version: int, now: datetime
    ) -> bool:
        state = self.k.load(sid)
        if state.version != seen_version:
            return False  # moved on since the deadline was read; its new deadline is armed
        cmd: sb.Command
        match kind:
            case "idle":
                cmd = sb.FireIdleTimeout(timeout=self.k.policy.idle_timeout)
            case "retention":
                cmd = timers.FireRetention(retention=self.k.policy.retention)
            case "max_lifetime":
                # No limit any more (the setting was removed): a zero-length lifetime would destroy it.
                limit = self.k.policy.max_lifetime
                if limit is None:
                    self.k.store.write_projection(project(state, self.k.policy))
                    return False
                cmd = timers.FireMaxLifetime(max_lifetime=limit)
            case _:
                assert_never(kind)
        if not sb.decide(state, cmd, now):
            # A stale timer (settings changed): re-arm from the current policy.
            self.k.store.write_projection(project(state, self.k.policy))
            return False
        if kind == IDLE:
            if self._output_moved(state, now):
                return False
            cmd = sb.FireIdleTimeout(
                timeout=self.k.policy.idle_timeout, running_processes=self.k.stopping_processes(state)
            )
        cid = random_id()
        try:
            after = self.k.apply(state, cmd, correlation_id=cid, at=now)
        except ConcurrencyError:
            return False  # another scheduler won; exactly one transition happens
        self.k.drive(after, cid, cmd.reason, at=now, actor=cmd.actor)
        return True

    def _warn(self, sid: str, seen_version: int, now: datetime) -> list[str]:
        """Record a warning (ExpiryWarned) for each timer of the sandbox that acts within the lead, once
        per deadline; returns the timers warned of. Appended at the version loaded: of two schedulers
        only one records it."""
        state = self.k.load(sid)
        if state.version != seen_version:
            return []  # moved on since the deadline was read; its new deadline is armed
        policy, warned = self.k.policy, list[str]()
        owed = expiring(state, policy)
        for due in owed:
            cmd = timers.WarnExpiry(
                timer=due.timer,
                due_at=due.due_at,
                lead=policy.warning_lead,
                checkpoint_version=due.checkpoint_version,
            )
            try:
                after = self.k.apply(state, cmd, at=now)
            except ConcurrencyError:
                return warned  # another scheduler (or a command) won; the new version re-arms the rest
            if after is not state:
                warned.append(due.timer)
            state = after
        if not owed:
            # Nothing owed (warnings turned off, or a lead changed since the deadline was armed): re-armed
            # from the current policy. Not when a warning came too late (the timer acts in this sweep): a
            # projection written from this load could overwrite a newer one another scheduler wrote.
            self.k.store.write_projection(project(state, policy))
        return warned

    def _collect(self, sid: str, seen_version: int, now: datetime) -> bool:
        """Collect the checkpoints retention no longer keeps: ``CheckpointCollected`` is recorded first,
        then each snapshot is deleted. A crash between leaves an orphan the reconciler removes, never a
        checkpoint the log lists whose snapshot is gone."""
        state = self.k.load(sid)
        if state.version != seen_version:
            return False
        cmd = sb.CollectCheckpoints(retention=self.k.policy.retention)
        try:
            after = self.k.apply(state, cmd, at=now)
        except ConcurrencyError:
            return False
        gone = [c for c in state.checkpoints if c not in after.checkpoints]
        if not gone:
            self.k.store.write_projection(project(state, self.k.policy))  # stale: re-arm from the policy
            return False
        for cp in gone:
            try:
                self.k.provider.delete_snapshot(SnapshotInfo(cp.snapshot_key, cp.sha256, cp.bytes))
            except Exception as exc:
                log.warning(
                    "could not delete collected checkpoint %s (the reconciler will): %s", cp.snapshot_key, exc
                )
        return True

    def _output_moved(self, state: sb.Sandbox, now: datetime) -> bool:
        """Whether the provider saw activity the log has not since the idle cutoff: a background process's
        output moving (``last_activity``, reason ``process_output``) or a model call through the gateway
        (``model_activity``, reason ``model_call``). If so it is recorded (a Touch with that reason),
        re-arming the timer, and the sandbox is not suspended. A provider that cannot tell, or fails to,
        is taken at its log."""
        if state.provider_ref is None:
            return False
        cutoff = now - self.k.policy.idle_timeout
        for method, reason in (
            ("last_activity", PROCESS_OUTPUT_REASON),
            ("model_activity", MODEL_CALL_REASON),
        ):
            ask = getattr(self.k.provider, method, None)
            if ask is None:
                continue
            try:
                seen = ask(state.provider_ref)
            except Exception as exc:
                log.warning("could not ask the provider for the %s of %s: %s", method, state.id, exc)
                continue
            if seen is None or seen <= cutoff:
                continue
            # Window 0: this Touch must land, or the due timer would stay armed and fire again at once. A
            # lost race means something else was recorded meanwhile, which armed its own deadline.
            with suppress(ConcurrencyError):
                self.k.apply(state, sb.Touch(window=timedelta(0), actor="scheduler", reason=reason), at=now)
            return True
        return False

    # ------------------------------------------------------------------------------------ recovery

    def _recover(self, sid: str, now: datetime) -> bool:
        """Re-drive a side effect whose lease ran out, from what the provider really holds."""
        state = self.k.load(sid)
        if state.status not in lc.TRANSITIONAL or state.state_since is None:
            return False
        if now - state.state_since < self.k.policy.lease:
            return False
        log.info("recovering sandbox %s stuck in %s since %s", sid, state.status, state.state_since)
        cid = random_id()
        try:
            # Claimed in the log first, at the version loaded: of two sweeps (two processes, or a timer and
            # the interval job of one) only one re-drives the side effect. Two resumes re-driven at once
            # each replace the other's container, and the loser's replacement outlives the winner's record.
            state = self.k.apply(state, sb.Recover(), correlation_id=cid, at=now)
            self.k.drive(state, cid, "recovery", at=now, recovery=True)
        except ConcurrencyError:
            return False  # its owner (or another sweep) recorded the outcome meanwhile
        return True

    def reconcile(self, now: datetime | None = None) -> SweepReport:
        when = now or self.k.clock()
        report = SweepReport()
        for row in self.k.store.list_sandboxes():
            if row.state in lc.TRANSITIONAL:
                try:
                    if self._recover(row.id, when):
                        report.recovered.append(row.id)
                except Exception as exc:
                    report.errors.append(_describe(row.id, exc))
        self._remove_orphans(report)
        self._remove_stale_uploads(report)
        self._remove_unused_network(report)
        return report

    def sweep(self, now: datetime | None = None) -> SweepReport:
        fired = self.fire_due(now)
        rec = self.reconcile(now)
        return SweepReport(
            fired=fired.fired,
            recovered=fired.recovered + rec.recovered,
            removed=rec.removed,
            warned=fired.warned,
            # A corrupt stream met by both halves is one problem, reported once.
            errors=list(dict.fromkeys(fired.errors + rec.errors)),
        )

    # ------------------------------------------------------------------------------------- orphans

    @staticmethod
    def _listed(report: SweepReport, what: str, items: Callable[[], Iterable[T]]) -> list[T]:
        try:
            return list(items())
        except Exception as exc:
            report.errors.append(f"orphan sweep: cannot list {what}: {exc}")
            return []

    def _remove_orphans(self, report: SweepReport) -> None:
        provider, store = self.k.provider, self.k.store
        # Listings are of this deployment only: another stack's instances never show up here, and a
        # provider refuses (ForeignSandbox) to act on one that does under our name.
        for inst in self._listed(report, "instances", lambda: provider.list_instances()):
            try:
                owner = store.get_sandbox(inst.sandbox_id)
                orphan = (
                    owner is None
                    or owner.state == lc.EXPIRED
                    or (owner.state == lc.SUSPENDED and inst.status == "running")
                )
                if orphan and self._unchanged(inst.sandbox_id, owner):
                    provider.destroy(inst.sandbox_id, inst.ref)
                    was = owner.state if owner else "unknown"
                    msg = f"removed orphan instance {inst.ref} of sandbox {inst.sandbox_id} ({was})"
                    log.info(msg)
                    report.removed.append(msg)
                    self.k.observer.orphan_removed("instance")
            except Exception as exc:
                report.errors.append(_describe(inst.sandbox_id, exc))
        for sid, snap in self._listed(report, "snapshots", lambda: provider.list_snapshots()):
            try:
                row = store.get_sandbox(sid)
                state = self.k.load(sid) if row is not None else None
                keep = (
                    state is not None
                    and state.status != lc.EXPIRED
                    and snap.key
                    in {
                        state.snapshot_key,
                        state.pending_snapshot_key,
                        *(c.snapshot_key for c in state.checkpoints),
                    }
                )
                # Decided on the log at the row's version: a stream that moved since is left to a sweep
                # that sees it as it is.
                moved = row is not None and (state is None or state.version != row.version)
                if not keep and not moved and self._unchanged(sid, row):
                    provider.delete_snapshot(snap)
                    was = state.status if state else "unknown"
                    msg = f"removed orphan snapshot {snap.key} of sandbox {sid} ({was})"
                    log.info(msg)
                    report.removed.append(msg)
                    self.k.observer.orphan_removed("snapshot")
            except Exception as exc:
                # A sandbox whose stream cannot be read keeps its snapshot: it may be the only copy.
                report.errors.append(_describe(sid, exc))

    def _unchanged(self, sid: str, listed: SandboxRow | None) -> bool:
        """Whether the sandbox is still at the version the removal was decided on (still no row, if it had
        none), re-read right before removing: the optimistic check ``Kernel.apply`` makes with its
        expected version. The state alone is not enough: a sandbox resumed and suspended again since the
        listing is back in the same state, yet what was listed is no longer what is there."""
        row = self.k.store.get_sandbox(sid)
        if listed is None or row is None:
            return row is None and listed is None
        return row.version == listed.version

    def _remove_stale_uploads(self, report: SweepReport) -> None:
        """Remove what killed suspends left in the snapshot store (partial files, incomplete multipart
        uploads), once they are older than the lease: a live suspend is never older than that, since
        past it the sweep re-drives the suspend anyway.

        Measured against the real clock, not the sweep's ``now``: a sweep run for a moment in the future
        must not abort an upload in flight right now.
        """
        try:
            # Looking the method up may build a lazily built provider, which can fail like any call.
            remove = getattr(self.k.provider, "remove_stale_uploads", None)
            if remove is None:
                return  # this provider keeps no uploads of its own (E2B pauses the instance itself)
            removed = remove(self.k.clock() - self.k.policy.lease)
        except Exception as exc:
            report.errors.append(f"stale uploads: {exc}")
            return
        for name in removed:
            msg = f"removed stale upload {name}"
            log.info(msg)
            report.removed.append(msg)
            self.k.observer.orphan_removed("upload")

    def _remove_unused_network(self, report: SweepReport) -> None:
        """Remove the provider's network leftovers no sandbox needs (Docker: per-sandbox networks whose
        container is gone, port forwarders, an idle egress container), once older than the lease."""
        try:
            remove = getattr(self.k.provider, "remove_unused_network", None)
            if remove is None:
                return  # this provider's sandboxes bring their own network (E2B)
            removed = remove(self.k.clock() - self.k.policy.lease)
        except Exception as exc:
            report.errors.append(f"unused network: {exc}")
            return
        for msg in removed:
            log.info(msg)
            report.removed.append(msg)
