"""`recover`: re-drive one stuck or failed sandbox now, instead of waiting for its lease and a sweep.

What the sweep does for every sandbox, on its own schedule (``core/recovery.py``), done for one sandbox
at once and in three steps, each recorded as events with their reason and actor:

1. a side effect in flight (creating, suspending, resuming, destroying) is taken over at once, its lease
   not waited out (``RecoveryStarted`` by the caller), and driven to its outcome from what the provider
   really holds (the outcomes are the reconciler's, as the sweep's are);
2. the state the log gives is checked against the provider: a live sandbox whose instance is gone, or a
   suspended one whose snapshot is gone, is recorded lost (``ProviderLost``); an instance running for a
   suspended sandbox, or anything left of an expired one, is removed (the reconciler's orphan rules);
3. what is true afterwards is returned, with each action taken.

A sandbox the log and the provider agree on is left alone: a second ``recover`` does nothing and records
nothing. The trade-off of step 1: an owner that is not dead after all (a slow resume) loses the race to
record its outcome (its append conflicts), and the provider's calls are idempotent by sandbox id, so the
worst case is work done twice, never two records. docs/operations.md, "Recovering one sandbox".
"""

from __future__ import annotations

import logging
from dataclasses import field

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import ConcurrencyError, SandboxBusy, SandboxError
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import MAX_RACES, Kernel, one_line
from sandbox_lifecycle.core.ports import SnapshotInfo
from sandbox_lifecycle.events.values import FieldValues, value_class

__all__ = ["RECOVER_REASON", "RecoverCalls", "Recovery"]

log = logging.getLogger("sandbox_lifecycle")

# The reason recorded on what `recover` appends, unless its caller gives one.
RECOVER_REASON = "recover"


@value_class
class Recovery(FieldValues):
    """What ``recover`` found and did: the state before and after, and each action in order (none: the
    log and the provider agreed). ``error``: the side effect re-driven failed again (the sandbox is where
    its failure left it, said by ``state``)."""

    sandbox_id: str
    before: str
    state: str
    actions: list[str] = field(default_factory=list)
    error: str | None = None


class Rescuer:
    """Recovery of one sandbox on the kernel (see the module's docstring)."""

    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel
        # What this one call did, in order, and the error of a side effect re-driven that failed again.
        self.actions: list[str] = []
        self.error: str | None = None

    def recover(self, sandbox_id: str, reason: str, actor: str) -> Recovery:
        before = self.k.load(sandbox_id).status  # SandboxNotFound for an unknown id
        for _ in range(MAX_RACES):
            try:
                self._check(self._take_over(self.k.load(sandbox_id), reason, actor), actor)
            except ConcurrencyError:
                continue  # something else was recorded meanwhile: look again at what is true now
            after = self.k.load(sandbox_id).status
            return Recovery(sandbox_id, before, after, self.actions, self.error)
        raise SandboxBusy(sandbox_id, "contended", "too many concurrent writers")

    def _take_over(self, state: sb.Sandbox, reason: str, actor: str) -> sb.Sandbox:
        """Step 1: a side effect in flight, driven to its outcome now."""
        if state.status not in lc.TRANSITIONAL:
            return state
        cid = random_id()
        started = self.k.apply(state, sb.Recover(actor=actor, reason=reason), correlation_id=cid)
        self.actions.append(f"took over the {state.status} in flight since {_when(state)}")
        try:
            after = self.k.drive(started, cid, reason, recovery=True)
        except SandboxError as exc:
            self.error = one_line(exc)
            self.actions.append(f"re-driving it failed: {self.error}")
            return self.k.load(state.id)
        self.actions.append(f"re-driven from the provider's state: {after.status}")
        return after

    def _check(self, state: sb.Sandbox, actor: str) -> None:
        """Step 2: the stable state checked against the provider."""
        provider = self.k.provider
        inst = provider.instance(state.id) if state.status != lc.NEW else None
        if state.status in lc.LIVE:
            if inst is None or inst.ref != state.provider_ref:
                detail = f"instance {state.provider_ref} is gone from the provider (found by recover)"
                self._lost(state, detail, actor)
                if inst is not None:  # not the log's instance: nobody's, once the sandbox is expired
                    provider.destroy(state.id, inst.ref)
                    self.actions.append(f"removed instance {inst.ref}, which the log does not name")
        elif state.status == lc.SUSPENDED:
            if inst is not None and inst.status == "running":
                provider.destroy(state.id, inst.ref)
                self.actions.append(f"removed instance {inst.ref}, running for a suspended sandbox")
            assert state.snapshot_key is not None  # every way into suspended records one
            snapshot = SnapshotInfo(state.snapshot_key, state.snapshot_sha256, state.snapshot_bytes)
            if not _snapshot_ok(self.k, snapshot):
                self._lost(state, f"snapshot {snapshot.key} is missing or fails verification", actor)
        elif state.status == lc.EXPIRED:
            if inst is not None:
                provider.destroy(state.id, inst.ref)
                self.actions.append(f"removed instance {inst.ref} of the expired sandbox")
            for owner, snap in provider.list_snapshots():
                if owner == state.id:
                    provider.delete_snapshot(snap)
                    self.actions.append(f"removed snapshot {snap.key} of the expired sandbox")

    def _lost(self, state: sb.Sandbox, detail: str, actor: str) -> None:
        self.k.apply(state, sb.MarkLost(detail=detail, actor=actor), correlation_id=random_id())
        self.actions.append(f"recorded the workspace lost: {detail}")
        log.warning("recover: sandbox %s expired: %s", state.id, detail)


def _snapshot_ok(kernel: Kernel, snapshot: SnapshotInfo) -> bool:
    try:
        return kernel.provider.snapshot_ok(snapshot)
    except Exception as exc:
        # Cannot tell: kept as intact. A wrong "lost" would give a workspace up for good.
        log.warning("recover: could not check snapshot %s (kept as intact): %s", snapshot.key, exc)
        return True


def _when(state: sb.Sandbox) -> str:
    return state.state_since.isoformat(timespec="seconds") if state.state_since else "an unknown time"


class RecoverCalls:
    """The ``recover`` call of SandboxService (it inherits it)."""

    kernel: Kernel

    def recover(self, sandbox_id: str, *, reason: str = RECOVER_REASON, actor: str | None = None) -> Recovery:
        """Re-drive one stuck or failed sandbox now: take over a side effect in flight without waiting for
        its lease, check what the log says against the provider, record what is true (events with
        ``reason`` and ``actor``), remove what the sandbox no longer owns. SandboxNotFound for an unknown
        id; idempotent (a sandbox already consistent is left as it is, nothing recorded)."""
        return Rescuer(self.kernel).recover(sandbox_id, reason, actor or self.kernel.actor)
