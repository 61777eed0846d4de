"""The lifetime timer and the warnings before a timer acts, through the service on a fake clock, on the
in-memory store and both real ones: what the feed shows, when, and what a touch changes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider

IDLE = timedelta(minutes=30)
LEAD = timedelta(seconds=60)
LIFETIME = timedelta(hours=2)
POLICY = Policy(
    idle_timeout=IDLE,
    retention=timedelta(days=7),
    lease=timedelta(minutes=10),
    max_lifetime=LIFETIME,
    warning_lead=LEAD,
)


@pytest.fixture
def timed(store: EventStore, provider: FakeProvider, clock: Clock) -> SandboxService:
    return SandboxService(store, provider, policy=POLICY, clock=clock)


def _warnings(service: SandboxService, sid: str) -> list[tuple[str, str]]:
    return [
        (e.data["timer"], e.data["due_at"])
        for e in service.events(sandbox_id=sid)
        if e.type == "ExpiryWarned"
    ]


def test_the_feed_shows_the_idle_warning_once_at_due_minus_lead_and_a_touch_moves_it(
    timed: SandboxService, clock: Clock
) -> None:
    start = clock.now
    sid = timed.create("data-app", "conv").id
    clock.now = start + IDLE - LEAD - timedelta(seconds=1)
    timed.fire_due()
    assert _warnings(timed, sid) == []  # a second early: nothing yet

    clock.now = start + IDLE - LEAD
    report = timed.fire_due()
    assert report.warned == [f"{sid}:idle"]
    assert _warnings(timed, sid) == [("idle", (start + IDLE).isoformat())]
    warned = next(e for e in timed.events(sandbox_id=sid) if e.type == "ExpiryWarned")
    assert (warned.metadata["actor"], warned.metadata["reason"]) == ("scheduler", "expiring")
    assert warned.data["lead_ms"] == 60_000
    timed.fire_due()
    assert len(_warnings(timed, sid)) == 1  # once per deadline, however often the sweep runs

    # The backend answers: the sandbox is not suspended at the warned time ...
    touched_at = clock.advance(seconds=30)
    timed.touch(sid)
    clock.now = start + IDLE
    timed.fire_due()
    assert timed.get(sid).state == lc.IDLE
    # ... and a new warning comes before the new deadline, then the timer acts.
    clock.now = touched_at + IDLE - LEAD
    timed.fire_due()
    assert _warnings(timed, sid)[-1] == ("idle", (touched_at + IDLE).isoformat())
    clock.now = touched_at + IDLE
    timed.fire_due()
    assert timed.get(sid).state == lc.SUSPENDED


def test_a_sandbox_reaches_its_max_lifetime_whatever_its_activity(
    timed: SandboxService, clock: Clock
) -> None:
    start = clock.now
    sid = timed.create("data-app", "conv").id
    # Busy all along: a touch every 20 minutes keeps the idle timer away.
    while clock.now < start + LIFETIME - timedelta(minutes=20):
        clock.advance(minutes=20)
        timed.touch(sid)
        timed.fire_due()
    assert timed.get(sid).state == lc.IDLE
    clock.now = start + LIFETIME - LEAD
    timed.fire_due()
    assert ("max_lifetime", (start + LIFETIME).isoformat()) in _warnings(timed, sid)
    clock.now = start + LIFETIME
    report = timed.fire_due()
    assert report.fired == [f"{sid}:max_lifetime"]
    row = timed.get(sid)
    assert (row.state, row.expired_reason) == (lc.EXPIRED, "max_lifetime")
    last = [e for e in timed.events(sandbox_id=sid)][-3:]
    assert [e.type for e in last] == ["MaxLifetimeElapsed", "DestroyRequested", "Destroyed"]
    assert {e.metadata["actor"] for e in last} == {"scheduler"}


def test_a_suspended_sandbox_reaches_its_max_lifetime_and_its_snapshot_goes(
    timed: SandboxService, clock: Clock, provider: FakeProvider
) -> None:
    start = clock.now
    sid = timed.create("data-app", "conv").id
    timed.suspend(sid)
    assert provider.list_snapshots()
    clock.now = start + LIFETIME
    timed.fire_due()
    assert timed.get(sid).expired_reason == "max_lifetime"
    assert provider.list_snapshots() == []


def test_the_lifetime_setting_removed_disarms_the_timer(timed: SandboxService, clock: Clock) -> None:
    start = clock.now
    sid = timed.create("data-app", "conv").id
    timed.kernel.policy = Policy(idle_timeout=timedelta(days=1), lease=timedelta(minutes=10))
    clock.now = start + LIFETIME
    assert timed.fire_due().fired == []
    assert timed.get(sid).state == lc.IDLE
    assert [d.kind for d in timed.store.all_deadlines() if d.sandbox_id == sid] == ["idle"]
