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
    """Run ``job()`` every ``interval`` s in a daemon thread while the block runs, for at most ``bound``
    s, or until it returns False. The thread is stopped and joined when the block is left, so no write
    of it lands after the call's outcome."""
    stop = threading.Event()
    give_up = time.monotonic() + bound

    def run() -> None:
        while not stop.wait(min(interval, max(0.0, give_up - time.monotonic()))):
            if time.monotonic() >= give_up or not job():
                return

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(_JOIN_S)
