"""Admission: what a caller does when the fleet is full (``core/capacity.py`` holds the limits).

When the store refuses an append that makes a sandbox hold compute, suspend the least recently active
idle sandbox (a normal suspend, reason ``capacity``) and try again; when no sandbox is idle (every live
one is running a turn, or on its way in or out), wait for a slot, polling with a bounded backoff, up to
``Capacity.wait``, then raise ``CapacityExceeded``.

Order of waiters: inside one process, waiters are served in arrival order (a ticket queue: only the
oldest waiter retries the append or evicts; a waiter whose wait ran out before its turn tries once
before giving up, so none is refused without the store refusing it). Across processes there is no
shared queue: each process's oldest waiter polls, so a slot goes to whichever process's head retries
first after it frees. No waiter waits longer than ``Capacity.wait``, so none starves past that bound.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.capacity import CAPACITY_REASON, suspend_failed_lately
from sandbox_lifecycle.core.errors import CapacityExceeded, ConcurrencyError, SandboxError
from sandbox_lifecycle.core.kernel import Kernel
from sandbox_lifecycle.events.records import CapacityRefused, SandboxLeased

__all__ = ["Admission"]

log = logging.getLogger("sandbox_lifecycle")

T = TypeVar("T")

# Polling a full fleet: the first retry comes soon (a turn ending frees a slot at once), later ones
# back off to this, so N waiters cost the database at most N / _POLL_MAX reads a second.
_POLL_FIRST, _POLL_MAX = 0.02, 0.25
# How many idle sandboxes one eviction looks at (a try that loses a race, the sandbox starting a turn
# meanwhile, moves on to the next least recently active), and how many one admission may suspend.
_MAX_EVICTIONS = 5
_FRESH = timedelta(seconds=1)


class _Tickets:
    """Arrival order of this process's waiters: only the oldest one may try for a slot."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[int] = []
        self._numbers = itertools.count()

    def enter(self) -> int:
        with self._cond:
            ticket = next(self._numbers)
            self._queue.append(ticket)
            return ticket

    def leave(self, ticket: int) -> None:
        with self._cond:
            self._queue.remove(ticket)
            self._cond.notify_all()

    def wait_turn(self, ticket: int, timeout: float) -> bool:
        """Block until ``ticket`` is the oldest (True) or ``timeout`` passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._queue[0] == ticket, timeout=max(0.0, timeout))

    def wait_change(self, timeout: float) -> None:
        """Sleep for ``timeout`` or until a waiter leaves (a slot may have freed in this process)."""
        with self._cond:
            self._cond.wait(timeout=max(0.0, timeout))


class Admission:
    """Runs an append that makes a sandbox hold compute, making room or waiting when the fleet is full."""

    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel
        self._tickets = _Tickets()

    def admit(self, kind: str, attempt: Callable[[], T], *, actor: str) -> T:
        """``attempt()`` (an append carrying the kind's limits) once the fleet has room for it.

        Raises CapacityExceeded after ``Capacity.wait`` without a slot.
        """
        capacity = self.k.capacity
        if not capacity.bounded:
            return attempt()
        budget = capacity.wait.total_seconds()
        give_up = time.monotonic() + budget
        ticket = self._tickets.enter()
        pause = _POLL_FIRST
        evictions = 0
        refused: CapacityRefused | None = None
        try:
            while True:
                # The oldest waiter tries; so does any waiter whose budget ran out before its turn came
                # (with SANDBOX_CAPACITY_WAIT_MS=0, every caller but the first): a caller is refused only
                # after the store refused it, never for having queued behind others while there was room.
                turn = self._tickets.wait_turn(ticket, give_up - time.monotonic())
                if turn or time.monotonic() >= give_up:
                    try:
                        return attempt()
                    except CapacityRefused as exc:
                        refused = exc
                    # Each eviction frees a slot that another replica may take first; bounded, so one
                    # caller never empties the fleet of idle sandboxes.
                    if evictions < _MAX_EVICTIONS and self.evict(
                        kind if refused.limit.kind else None, actor=actor
                    ):
                        evictions += 1
                        continue  # a slot was freed: take it before anyone polls
                left = give_up - time.monotonic()
                if left <= 0 and refused is not None:
                    raise CapacityExceeded(kind, refused.limit.limit, refused.limit.kind, budget)
                self._tickets.wait_change(min(pause, left))
                pause = min(pause * 2, _POLL_MAX)
        finally:
            self._tickets.leave(ticket)

    def evict(self, kind: str | None, *, actor: str) -> bool:
        """Suspend the least recently active idle sandbox (of ``kind``, when only its limit is full).

        A pooled sandbox holds no one's work: it is destroyed instead (its pool refills when there is
        room). True once one has left compute; False when none idle could be taken.
        """
        # One idle for less than a moment has most likely just been created or resumed for a turn that
        # is about to start on it: taking it would only make that turn resume it again.
        now = self.k.clock()
        # A sandbox with a call in flight (an exec, a file call, a wait) is not idle, whatever the log's
        # coalesced activity says: its lease keeps it (core/inflight.py). Read once here to skip them;
        # the store checks again, in the suspend's own append.
        busy = self.k.store.leased_sandboxes(now)
        idle = [
            r
            for r in self.k.store.list_sandboxes(lc.IDLE)
            if (kind is None or r.kind == kind)
            and r.state_since <= now - _FRESH
            and r.id not in busy
            and not suspend_failed_lately(r, now)
        ]
        idle.sort(key=lambda r: (r.last_activity_at is not None, r.last_activity_at, r.id))
        for row in idle[:_MAX_EVICTIONS]:
            try:
                state = self.k.load(row.id)
                if state.status != lc.IDLE:
                    continue
                cmd: sb.Command
                if state.pooled:
                    cmd = sb.Destroy(actor=actor, reason=CAPACITY_REASON)
                else:
                    # Background processes it stops are recorded, as on any suspend, for the next turn.
                    stopping = self.k.stopping_processes(state)
                    cmd = sb.RequestSuspend(actor=actor, reason=CAPACITY_REASON, running_processes=stopping)
                # At the version just seen: if it started a turn meanwhile, the append loses and the
                # running turn is left alone (a plain suspend would take a running sandbox too). And
                # refused while a call in flight holds a lease on it, taken since the read above.
                after = self.k.apply(state, cmd, correlation_id=f"capacity-{row.id}", unleased=True)
            except (ConcurrencyError, SandboxLeased, SandboxError) as exc:
                log.debug("capacity: could not take idle sandbox %s: %s", row.id, exc)
                continue
            log.info("capacity: %s idle sandbox %s to make room", type(cmd).__name__, row.id)
            try:
                self.k.drive(after, f"capacity-{row.id}", CAPACITY_REASON, actor=actor)
            except SandboxError as exc:
                # The suspend failed and the sandbox is idle again (or left to the sweep): not room.
                log.warning("capacity: making room with sandbox %s failed: %s", row.id, exc)
                continue
            return True
        return False
