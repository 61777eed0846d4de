"""What an interrupted resume or suspend really left, decided from provider reality.

The design rule: never lose a workspace whose snapshot is stored and verified. A provider error in the
middle of a resume or a suspend says what went wrong with the *instance*; the workspace may be safe in a
snapshot all the same, so before the kernel records a failure it asks here which outcome is true:

* a resume whose instance was lost (its container or its network removed under it, docker's 404s) while
  the snapshot it resumes from is still stored and verifies: the resume failed, the sandbox is
  ``suspended`` again with that snapshot (``ResumeFailed``), never ``expired``. Only a snapshot that is
  missing or fails verification makes the workspace lost;
* a suspend that failed after its snapshot was stored at the intent's key (the container already gone,
  or "removal already in progress" because another caller removes it): the suspend happened. The
  compute is released (idempotent) and ``Suspended`` is recorded with that snapshot, so the sweep does
  not delete it as an orphan and the next turn finds the workspace.

Found by bench/faults_bench.py (docs/reliability.md, bug 2).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import (
    ProviderError,
    ProviderLost,
    SandboxError,
    SandboxExpired,
    SnapshotNotFound,
)
from sandbox_lifecycle.core.ports import SandboxProvider, SnapshotInfo

__all__ = ["loss_error", "resume_loss", "suspend_or_stored"]

log = logging.getLogger("sandbox_lifecycle")


def _snapshot_ok(provider: SandboxProvider, snapshot: SnapshotInfo) -> bool:
    try:
        return provider.snapshot_ok(snapshot)
    except Exception as exc:
        # Cannot tell: assume the snapshot is there. A wrong "intact" costs one more failed resume; a
        # wrong "lost" would give up a workspace for good.
        log.warning("could not check snapshot %s (kept as intact): %s", snapshot.key, exc)
        return True


def resume_loss(
    provider: SandboxProvider, state: sb.Sandbox, exc: ProviderLost, actor: str, reason: str
) -> sb.Command:
    """The outcome of a resume that raised ProviderLost: MarkFailed (back to suspended, snapshot kept)
    unless the snapshot itself is missing or fails verification, then MarkLost."""
    snapshot = SnapshotInfo(state.snapshot_key or "", state.snapshot_sha256, state.snapshot_bytes)
    resuming = state.status == lc.RESUMING and state.snapshot_key is not None
    if resuming and not isinstance(exc, SnapshotNotFound) and _snapshot_ok(provider, snapshot):
        error = f"instance lost during the resume, snapshot kept: {exc}"
        return sb.MarkFailed(error=error, actor=actor, reason=reason)
    return sb.MarkLost(detail=str(exc), actor=actor)


def loss_error(state: sb.Sandbox, outcome: sb.Command, exc: ProviderLost, now: datetime) -> SandboxError:
    """What the caller is told: the sandbox expired, or (snapshot kept) a retryable ProviderError."""
    if isinstance(outcome, sb.MarkLost):
        return SandboxExpired(state.id, now, "provider_lost")
    return ProviderError(
        f"sandbox {state.id}: its instance was lost during the resume ({exc}); the snapshot is kept and "
        "the sandbox is suspended again: resume it again"
    )


def suspend_or_stored(provider: SandboxProvider, state: sb.Sandbox) -> SnapshotInfo:
    """Run the suspend's provider call; if it fails after the intent's snapshot was stored (the
    container gone, or its removal already under way), the stored snapshot is the outcome: the compute
    is released (idempotent) and its SnapshotInfo returned. Otherwise the call's error is raised."""
    key = state.pending_snapshot_key
    assert state.kind and key
    try:
        return provider.suspend(state.id, state.provider_ref or "", state.kind, key)
    except Exception as exc:
        try:
            stored = provider.snapshot_ok(SnapshotInfo(key, None, None))
            if stored:
                # The workspace is stored: releasing the compute is safe now (and a no-op if it is gone).
                provider.destroy(state.id, state.provider_ref)
        except Exception as check:
            log.warning("suspend of %s failed; its snapshot %s cannot be checked: %s", state.id, key, check)
            stored = False
        if not stored:
            raise
        log.warning("suspend of %s: %s; snapshot %s was stored, recorded as suspended", state.id, exc, key)
        return SnapshotInfo(key, None, None)
