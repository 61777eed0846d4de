"""Calls in flight on a sandbox (an exec, a file call, a wait on a background process): what they tell
the rest of the fleet while they run.

Two things, for two different readers:

* **The heartbeat** (for the idle timer): coalesced ``ActivityRecorded`` events, at most one per
  ``heartbeat_interval``, so an idle timer armed at the call's start does not fire while it runs. It
  is history (the audit trail says the sandbox was working) and it is coarse on purpose: the log gets
  about one event a minute, not one per exec.
* **The lease** (for an eviction for capacity): a row in ``sandbox_leases``, taken before the call
  looks at the sandbox and dropped when it returns, renewed every ``LEASE_TTL / 3`` meanwhile. An
  eviction's suspend is appended only if the store finds no unexpired lease on the sandbox, checked in
  the append's own transaction under the lock every append and every lease take holds, so it holds
  across threads, processes and replicas (docs/capacity.md, "Calls in flight"). The activity events
  could not do this: coalesced to one a minute, they cannot say whether a call is running *now*.

A lease expires on its own: a process that dies mid-call stops renewing, and its sandbox can be evicted
``LEASE_TTL`` later at the latest. Leases are taken only when the service has a capacity limit (without
one nothing is ever evicted, and an exec pays no extra write).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import InvalidTransition, SandboxExpired, SandboxNotFound
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import Kernel

log = logging.getLogger("sandbox_lifecycle")

# A call in flight (an exec, a file transfer) is activity: it is recorded every idle timeout / 3, so two
# beats can be missed before the timer would fire, and a crashed process stops beating (the timer then
# takes over). Not more often than this, whatever the idle timeout.
HEARTBEAT_MIN_S = 0.5
# The reason of the activity a heartbeat records, telling it apart from a call's own in the history.
HEARTBEAT_REASON = "command_running"
# How long a lease outlives its last renewal: the longest a crashed holder keeps its sandbox from being
# evicted. Renewed at a third of it, so two renewals may fail (a store hiccup) before it lapses.
LEASE_TTL = timedelta(seconds=30)
_RENEWALS_PER_TTL = 3
# How long leaving a call waits for its beat or renewal in flight (one short write).
_JOIN_S = 10.0


def heartbeat_interval(kernel: Kernel) -> float:
    """Seconds between the activity records of a call in flight."""
    return max(HEARTBEAT_MIN_S, kernel.policy.idle_timeout.total_seconds() / 3)


def _holder() -> str:
    """Who holds a lease, for a person reading the table: host and process."""
    return f"{os.uname().nodename}:{os.getpid()}"


@contextmanager
def heartbeat(kernel: Kernel, sandbox_id: str, bound: float) -> Iterator[None]:
    """While the block runs, record activity every ``heartbeat_interval``, for at most ``bound`` s.

    A long exec is not idleness: without this, an idle timer armed at the exec's start fires while the
    command still runs, and the suspend kills it. Each beat is the same coalesced ``Touch`` as a call's
    own, so a beat younger than ``policy.activity_window`` after another records nothing, and the history
    gets at most one ActivityRecorded per interval. The beats live in this process: if it dies, they stop
    and the idle timer takes over. The thread is stopped (and joined) as soon as the block is left.
    """
    interval = heartbeat_interval(kernel)
    window = kernel.policy.activity_window

    def beat() -> bool:
        try:
            kernel.run(
                sandbox_id, lambda s: sb.Touch(window=window, actor=kernel.actor, reason=HEARTBEAT_REASON)
            )
        except (InvalidTransition, SandboxExpired, SandboxNotFound):
            return False  # suspended, destroyed or lost meanwhile: nothing left to keep awake
        except Exception as exc:  # a store hiccup: the next beat tries again
            log.debug("heartbeat of sandbox %s failed: %s", sandbox_id, exc)
        return True

    with _every(interval, bound, beat, f"heartbeat-{sandbox_id}"):
        yield


@contextmanager
def lease(kernel: Kernel, sandbox_id: str, bound: float) -> Iterator[None]:
    """Hold a lease on the sandbox while the block runs (renewed for at most ``bound`` s), when the
    service has a capacity limit; see the module's doc. Taken before the block, so take it before
    loading the sandbox: a suspend committed before it is then seen by the load, and none after it."""
    if not kernel.capacity.bounded:
        yield
        return
    store, ttl = kernel.store, LEASE_TTL
    lease_id, holder = random_id(), _holder()
    now = kernel.clock()
    store.take_lease(lease_id, sandbox_id, holder, now, now + ttl)

    def renew() -> bool:
        try:
            now = kernel.clock()
            if not store.renew_lease(lease_id, now + ttl):
                # Purged once expired (renewals failed for a whole TTL): take it again for the rest.
                store.take_lease(lease_id, sandbox_id, holder, now, now + ttl)
        except Exception as exc:  # a store hiccup: the next renewal tries again
            log.debug("renewing the lease on sandbox %s failed: %s", sandbox_id, exc)
        return True

    try:
        with _every(ttl.total_seconds() / _RENEWALS_PER_TTL, bound, renew, f"lease-{sandbox_id}"):
            yield
    finally:
        try:
            store.release_lease(lease_id)
        except Exception as exc:
            # It expires on its own within LEASE_TTL; until then the sandbox only cannot be evicted.
            log.warning(
                "releasing the lease on sandbox %s failed (it expires by itself): %s", sandbox_id, exc
            )


@contextmanager
def _every(interval: float, bound: float, job: Callable[[], bool], name: str) -> Iterator[None]:
    """Run ``job()`` every ``interval`` s while the block runs, for at most ``bound`` s, or until it
    returns False. Leaving the block waits for a run in flight and cancels the rest, so no write of it
    lands after the call's outcome. Scheduled on the process's one ticker: a call that ends before its
    first run (nearly every exec) starts no thread at all."""
    task = _Task(interval, time.monotonic() + bound, job, name)
    _TICKER.schedule(task)
    try:
        yield
    finally:
        task.cancel()


class _Task:
    """One ``_every``: when it is next due, and a lock held while it runs (so a cancel waits for it)."""

    def __init__(self, interval: float, give_up: float, job: Callable[[], bool], name: str) -> None:
        self.interval, self.give_up, self.job, self.name = interval, give_up, job, name
        self.due = self._next(time.monotonic())
        self.lock = threading.Lock()
        self.cancelled = False

    def _next(self, now: float) -> float:
        return now + min(self.interval, max(0.0, self.give_up - now))

    def run(self) -> None:
        with self.lock:
            if self.cancelled:
                return
            if time.monotonic() >= self.give_up or not self.job():
                self.cancelled = True
                return
            self.due = self._next(time.monotonic())
        _TICKER.schedule(self)

    def cancel(self) -> None:
        # A run in flight (one short write) is waited for; one stuck past _JOIN_S is left to finish.
        got = self.lock.acquire(timeout=_JOIN_S)
        self.cancelled = True
        if got:
            self.lock.release()
        _TICKER.forget()


class _Ticker:
    """One daemon thread per process that starts each due task in a short-lived thread of its own, so
    a slow store write delays no other call's beat. A thread per call cost two thread starts and joins
    per exec (bench/service_exec_bench.py), for beats that nearly no exec lives long enough to need."""

    # Cancelled tasks stay queued until due (an idle timeout away); dropped once they are most of it.
    _COMPACT_AT = 64

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, _Task]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._cancelled = 0

    def schedule(self, task: _Task) -> None:
        with self._cond:
            if self._thread is None or self._pid != os.getpid():  # none yet, or a forked child's
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="inflight-ticker", daemon=True)
                self._thread.start()
            heapq.heappush(self._queue, (task.due, next(self._order), task))
            if self._queue[0][2] is task:
                self._cond.notify()  # due before whatever the ticker sleeps towards

    def forget(self) -> None:
        with self._cond:
            self._cancelled += 1
            if len(self._queue) >= self._COMPACT_AT and self._cancelled * 2 >= len(self._queue):
                self._queue = [entry for entry in self._queue if not entry[2].cancelled]
                heapq.heapify(self._queue)
                self._cancelled = 0

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._queue and self._queue[0][2].cancelled:
                        heapq.heappop(self._queue)
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        break
                    self._cond.wait(self._queue[0][0] - now if self._queue else None)
                task = heapq.heappop(self._queue)[2]
            threading.Thread(target=task.run, name=task.name, daemon=True).start()


_TICKER = _Ticker()
