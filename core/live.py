"""Calls on a live sandbox: wait out another caller's side effect, resume a suspended sandbox, then run
the call under the lease and the heartbeat that tell the fleet it is busy (``core/inflight.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from typing import TypeVar

from sandbox_lifecycle.core import inflight
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.admission import Admission
from sandbox_lifecycle.core.errors import (
    ConcurrencyError,
    ForeignSandbox,
    ProviderLost,
    SandboxBusy,
    SandboxExpired,
)
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import FOREIGN, MAX_RACES, Kernel
from sandbox_lifecycle.core.observe import in_sandbox_context

__all__ = ["FILE_CALL_BEAT_S", "LiveCalls"]

T = TypeVar("T")

# Waiting for another caller's side effect: the first poll comes soon (a resume takes about a second),
# later ones back off to this.
_POLL_FIRST, _POLL_MAX = 0.05, 1.0
# File calls carry no timeout of their own; their heartbeat stops after this at the latest.
FILE_CALL_BEAT_S = 3600.0


class LiveCalls:
    """Runs a provider call on a sandbox with live compute, for the service's data plane and turns."""

    def __init__(self, kernel: Kernel, admission: Admission, busy_wait: timedelta) -> None:
        self.k = kernel
        self.admission = admission
        # How long a call waits for another caller's in-flight side effect (a resume, a create) before
        # it reports the sandbox busy.
        self.busy_wait = busy_wait

    def settled(self, sandbox_id: str, wait: float | None = None) -> sb.Sandbox:
        """The sandbox once no create or resume of another caller is in flight on it.

        Polls the log with backoff, for at most ``wait`` seconds (default ``busy_wait``) and never past
        the in-flight step's lease: beyond it the other caller is presumed dead and the sweep takes over,
        so SandboxBusy says to come back later.
        """
        state = self.k.load_latest(sandbox_id)
        if state.status not in (lc.CREATING, lc.RESUMING, lc.SUSPENDING):
            return state  # the common case: nothing in flight, no clock to read
        budget = self.busy_wait.total_seconds() if wait is None else wait
        give_up = time.monotonic() + max(0.0, budget)
        pause = _POLL_FIRST
        while True:
            lease_left = (
                (state.state_since + self.k.policy.lease - self.k.clock()).total_seconds()
                if state.state_since is not None
                else 0.0
            )
            left = min(give_up - time.monotonic(), lease_left)
            if left <= 0:
                raise SandboxBusy(state.id, state.status, "another caller's operation is still in flight")
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)
            state = self.k.load_latest(sandbox_id)
            if state.status not in (lc.CREATING, lc.RESUMING, lc.SUSPENDING):
                return state

    def live(
        self, sandbox_id: str, *, reason: str = "user", actor: str | None = None, wait: float | None = None
    ) -> sb.Sandbox:
        """A sandbox with live compute: waits out another caller's create/resume/suspend, resumes it if it
        is suspended, and is a no-op when it is live already."""
        who = actor or self.k.actor
        for _ in range(MAX_RACES):
            state = self.settled(sandbox_id, wait)
            if state.status == lc.EXPIRED:
                raise SandboxExpired(state.id, state.expired_at, state.expired_reason)
            if state.status in lc.LIVE and state.provider_ref is not None:
                return state
            if state.status != lc.SUSPENDED:
                raise SandboxBusy(state.id, state.status)  # destroying
            cid = random_id()
            try:
                state = self.resume_admitted(state, who, reason, cid)
            except ConcurrencyError:
                continue  # someone else moved it (most likely began resuming it): wait for that
            return self.k.drive(state, cid, reason, actor=who)
        raise SandboxBusy(sandbox_id, "contended", "too many concurrent writers")

    def resume_admitted(self, state: sb.Sandbox, actor: str, reason: str, cid: str) -> sb.Sandbox:
        """Append the resume intent once the fleet has room for it (see ``SandboxService.create``)."""
        assert state.kind is not None
        return self.admission.admit(
            state.kind,
            lambda: self.k.apply(state, sb.RequestResume(actor=actor, reason=reason), correlation_id=cid),
            actor=actor,
        )

    @in_sandbox_context
    def call(
        self,
        sandbox_id: str,
        call: Callable[[str], T],
        wait: float | None = None,
        *,
        busy_for: float = FILE_CALL_BEAT_S,
    ) -> T:
        """Record activity, then run ``call(provider_ref)`` on the live sandbox, recording activity
        while it runs (a heartbeat, for at most ``busy_for`` seconds). If the provider says the sandbox is
        gone (a container removed behind our back), the sandbox is marked lost at once instead of
        pretending to be idle until a timer trips over it."""
        # The lease (taken first, so a capacity eviction either is seen by the load below or waits for
        # the call to end) keeps the sandbox from being evicted under the call (core/inflight.py).
        before_call = (self.busy_wait if wait is None else timedelta(seconds=wait)) + self.k.capacity.wait
        with inflight.lease(self.k, sandbox_id, busy_for + before_call.total_seconds()):
            state = self.live(sandbox_id, wait=wait)
            # A racer's write is itself activity (or a state change the provider call will run into), so
            # a lost race here loses nothing worth a retry.
            touch = sb.Touch(window=self.k.policy.activity_window, actor=self.k.actor)
            with suppress(ConcurrencyError):
                state = self.k.apply(state, touch)
            return self._call_live(state, call, busy_for)

    def _call_live(self, state: sb.Sandbox, call: Callable[[str], T], busy_for: float) -> T:
        """``call(provider_ref)`` with the heartbeat; a provider saying the sandbox is gone marks it lost."""
        assert state.provider_ref is not None
        try:
            with inflight.heartbeat(self.k, state.id, busy_for):
                return call(state.provider_ref)
        except ProviderLost as exc:
            try:
                self.k.apply(state, sb.MarkLost(detail=str(exc), actor=self.k.actor))
            except ConcurrencyError:
                raise exc from None  # it moved on meanwhile (suspended, destroyed): not ours to judge
            raise SandboxExpired(state.id, self.k.clock(), "provider_lost") from exc
        except ForeignSandbox as exc:
            with suppress(ConcurrencyError):
                self.k.apply(state, sb.MarkLost(detail=str(exc), actor=self.k.actor, reason=FOREIGN))
            raise
