"""Checkpoints: list a sandbox's stored snapshots, rewind its next resume to one, fork a new sandbox from one.

Every suspend's snapshot is a checkpoint, kept until ``SANDBOX_SNAPSHOT_RETENTION_MS`` after it was taken
(the sweep collects it, ``CheckpointCollected``) or until the sandbox is destroyed. They are a fold of the
log (``Sandbox.checkpoints``), so listing them reads nothing but the stream. See docs/checkpoints.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import (
    CheckpointNotFound,
    ConcurrencyError,
    SandboxBusy,
    SandboxExpired,
    SandboxNotFound,
    Unsupported,
)
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import Kernel
from sandbox_lifecycle.core.ports import SnapshotInfo
from sandbox_lifecycle.events.records import SandboxRow
from sandbox_lifecycle.events.values import FieldValues, value_class

__all__ = ["FORK_FAILED", "Checkpoint", "CheckpointCalls", "Checkpoints"]

log = logging.getLogger("sandbox_lifecycle")

# How long a fork waits for a side effect in flight on its source before it gives up recording it there.
_RECORD_WAIT_S = 30.0
# The expiry reason of a fork whose snapshot could not be copied.
FORK_FAILED = "fork_failed"


@value_class
class Checkpoint(FieldValues):
    """A checkpoint of a sandbox: the snapshot a suspend took at ``version`` of its stream.

    ``bytes`` is the size of the workspace (of the stored archive, for a whole archive); ``bytes_new``
    what this checkpoint added to the store (the pieces its suspend uploaded; None for a whole archive).
    ``current``: the snapshot the sandbox's next resume restores."""

    version: int
    at: datetime
    reason: str
    bytes: int | None
    bytes_new: int | None
    snapshot_key: str
    current: bool = False


def listed(state: sb.Sandbox) -> list[Checkpoint]:
    """The checkpoints the log holds for ``state``, oldest first."""
    return [
        Checkpoint(
            version=c.version,
            at=c.at,
            reason=c.reason,
            bytes=c.workspace_bytes if c.workspace_bytes is not None else c.bytes,
            bytes_new=c.bytes_new,
            snapshot_key=c.snapshot_key,
            current=c.snapshot_key == state.snapshot_key,
        )
        for c in state.checkpoints
    ]


class Checkpoints:
    """The checkpoint side of a SandboxService (its ``checkpoints``, ``rewind`` and ``fork``)."""

    def __init__(self, kernel: Kernel, suspend: Callable[[str, str, str], object]) -> None:
        self.k = kernel
        # The service's own suspend (sandbox id, reason, actor): a rewind of a live sandbox suspends it.
        self._suspend = suspend

    def list(self, sandbox_id: str) -> list[Checkpoint]:
        return listed(self.k.load(sandbox_id))

    def _require(self, what: str) -> None:
        if not self.k.capabilities.checkpoints:
            raise Unsupported(
                self.k.provider.name,
                what,
                "it cannot restore an earlier snapshot (each pause overwrites the last; docs/checkpoints.md)",
            )

    def rewind(self, sandbox_id: str, to_version: int, *, reason: str, actor: str) -> sb.Sandbox:
        self._require("rewinding a sandbox to a checkpoint")
        state = self.k.load(sandbox_id)
        if state.status == lc.EXPIRED:
            raise SandboxExpired(sandbox_id, state.expired_at, state.expired_reason)
        sb.find_checkpoint(state, to_version)  # refuse an unknown version before suspending anything
        if state.status in lc.LIVE:
            # Suspended first: that suspend is a checkpoint too, so the rewind can be undone.
            self._suspend(sandbox_id, "rewind", actor)
        cid = random_id()
        _, after = self.k.run(
            sandbox_id, lambda s: sb.Rewind(to_version=to_version, actor=actor, reason=reason), cid
        )
        return after

    def fork(
        self, sandbox_id: str, at_version: int | None, conversation_id: str | None, *, reason: str, actor: str
    ) -> str:
        """The new sandbox's id. Its stream is written first (suspended, naming its own snapshot key), then
        the archive is copied: the reconciler never sees the copy without an owner, and a copy that fails
        expires the fork (``fork_failed``); the source is untouched, then records the fork."""
        self._require("forking a sandbox from a checkpoint")
        source = self.k.load(sandbox_id)
        if lc.destination("record_fork", source.status) is None:
            if source.status == lc.EXPIRED:
                raise SandboxExpired(sandbox_id, source.expired_at, source.expired_reason)
            raise SandboxBusy(sandbox_id, source.status)
        if not source.checkpoints:
            raise CheckpointNotFound(sandbox_id, at_version if at_version is not None else 0)
        cp = source.checkpoints[-1] if at_version is None else sb.find_checkpoint(source, at_version)
        assert source.kind is not None and source.provider is not None
        fork_id = random_id()[:16]  # as core/service.new_sandbox_id
        key = sb.snapshot_key(fork_id, 1)
        cid = random_id()
        cmd = sb.Fork(
            source_id=sandbox_id,
            source_version=cp.version,
            kind=source.kind,
            provider=source.provider,
            conversation_id=conversation_id,
            snapshot_key=key,
            sha256=cp.sha256,
            bytes=cp.bytes,
            actor=actor,
            reason=reason,
        )
        try:
            self.k.apply(sb.initial(fork_id), cmd, correlation_id=cid)
        except ConcurrencyError:
            if conversation_id is not None and (live := self.k.store.find_live(conversation_id, source.kind)):
                raise SandboxBusy(
                    live.id, live.state, f"conversation {conversation_id} already has it"
                ) from None
            raise
        try:
            # The provider verifies the copy (Docker: the source's sha256 before, the stored size after).
            self.k.provider.copy_snapshot(SnapshotInfo(cp.snapshot_key, cp.sha256, cp.bytes), key)
        except Exception:
            # A fork with no snapshot is no use: it expires (reason fork_failed), deleting a partial copy.
            with suppress(Exception):
                _, doomed = self.k.run(fork_id, lambda s: sb.Destroy(actor=actor, reason=FORK_FAILED), cid)
                self.k.drive(doomed, cid, FORK_FAILED, actor=actor)
            raise
        self._record_fork(sandbox_id, fork_id, cp.version, actor, cid)
        return fork_id

    def _record_fork(self, sandbox_id: str, fork_id: str, version: int, actor: str, cid: str) -> None:
        """``Forked`` on the source. A side effect in flight there (a suspend takes seconds) is waited
        out, for a bounded time; past it the fork stands and its own stream names its source."""
        give_up = time.monotonic() + _RECORD_WAIT_S
        while True:
            try:
                self.k.run(
                    sandbox_id, lambda s: sb.RecordFork(fork_id=fork_id, at_version=version, actor=actor), cid
                )
                return
            except SandboxExpired as exc:
                log.warning("sandbox %s: fork %s not recorded on the source: %s", sandbox_id, fork_id, exc)
                return
            except SandboxBusy as exc:
                if time.monotonic() > give_up:
                    log.warning(
                        "sandbox %s: fork %s not recorded on the source: %s", sandbox_id, fork_id, exc
                    )
                    return
                time.sleep(0.2)


class CheckpointCalls:
    """The checkpoint calls of SandboxService (it inherits them), kept beside what they call."""

    _checkpoints: Checkpoints

    def checkpoints(self, sandbox_id: str) -> list[Checkpoint]:
        """One per suspend whose snapshot retention has not collected, oldest first."""
        return self._checkpoints.list(sandbox_id)

    def rewind(
        self, sandbox_id: str, to_version: int, *, reason: str = "user", actor: str | None = None
    ) -> SandboxRow:
        """The sandbox's next resume restores its checkpoint of ``to_version`` (a live sandbox is
        suspended first; that suspend is a checkpoint too). CheckpointNotFound for an unknown or
        collected version; Unsupported on a provider without checkpoints."""
        k = self._checkpoints.k
        self._checkpoints.rewind(sandbox_id, to_version, reason=reason, actor=actor or k.actor)
        return _row(k, sandbox_id)

    def fork(
        self,
        sandbox_id: str,
        at_version: int | None = None,
        conversation_id: str | None = None,
        *,
        reason: str = "fork",
        actor: str | None = None,
    ) -> SandboxRow:
        """A new sandbox (new id, same kind), suspended, whose first resume restores a copy of the
        checkpoint of ``at_version`` (default: the latest). Both streams record the lineage."""
        k = self._checkpoints.k
        fork_id = self._checkpoints.fork(
            sandbox_id, at_version, conversation_id, reason=reason, actor=actor or k.actor
        )
        return _row(k, fork_id)


def _row(kernel: Kernel, sandbox_id: str) -> SandboxRow:
    row = kernel.store.get_sandbox(sandbox_id)
    if row is None:
        raise SandboxNotFound(sandbox_id)
    return row
