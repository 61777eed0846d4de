"""Time rules at their edges: the decider alone (fast), then the service on the fake and both real stores.

At exactly its deadline a timer is due (``due_deadlines(now)`` returns ``due_at <= now``) and its guard
agrees: idle for exactly the timeout is idle-expired, suspended for exactly the retention is expired.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core import timers
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.projection import IDLE, RETENTION, Policy, project
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events import types as ev
from tests.support.fakes import Clock, FakeProvider

TIMEOUT = timedelta(minutes=30)
RETENTION_TIME = timedelta(days=7)
POLICY = Policy(idle_timeout=TIMEOUT, retention=RETENTION_TIME, lease=timedelta(minutes=10))
T = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def _run(state: sb.Sandbox, cmd: sb.Command, at: datetime) -> sb.Sandbox:
    return sb.replay(state.id, sb.decide(state, cmd, at), start=state)


def _idle_at(at: datetime) -> sb.Sandbox:
    s = _run(sb.initial("s"), sb.Create(kind="data-app", provider="fake"), at)
    return _run(s, sb.MarkReady(provider_ref="ref"), at)


def _suspended(active_at: datetime, suspended_at: datetime) -> sb.Sandbox:
    s = _idle_at(active_at)
    s = _run(s, sb.RequestSuspend(), suspended_at)
    return _run(s, sb.MarkSuspended(snapshot_key=s.pending_snapshot_key or ""), suspended_at)


# ------------------------------------------------------------------------------------ the decider


def test_idle_guard_fires_at_exactly_the_deadline_and_not_a_microsecond_before() -> None:
    s = _idle_at(T)
    fire = sb.FireIdleTimeout(timeout=TIMEOUT)
    assert sb.decide(s, fire, T + TIMEOUT - US) == []
    assert [type(e) for e in sb.decide(s, fire, T + TIMEOUT)] == [ev.IdleTimeoutElapsed, ev.SuspendRequested]
    # The armed deadline is that same instant.
    assert {d.kind: d.due_at for d in project(s, POLICY).deadlines} == {IDLE: T + TIMEOUT}


def test_retention_is_measured_from_the_suspension_not_from_the_last_activity() -> None:
    now = T + timedelta(days=8)
    s = _suspended(active_at=now - timedelta(days=8), suspended_at=now - timedelta(days=6))
    assert sb.decide(s, timers.FireRetention(retention=RETENTION_TIME), now) == []
    suspended_at = now - timedelta(days=6)
    assert {d.kind: d.due_at for d in project(s, POLICY).deadlines} == {
        RETENTION: suspended_at + RETENTION_TIME
    }
    # ... and at exactly suspension + retention it is due.
    fire = timers.FireRetention(retention=RETENTION_TIME)
    assert sb.decide(s, fire, suspended_at + RETENTION_TIME - US) == []
    assert [type(e) for e in sb.decide(s, fire, suspended_at + RETENTION_TIME)] == [
        ev.RetentionElapsed,
        ev.DestroyRequested,
    ]


def test_the_idle_deadline_moves_to_the_last_activity_plus_the_timeout() -> None:
    s = _run(_idle_at(T), sb.Touch(window=POLICY.activity_window), T + timedelta(minutes=20))
    assert {d.kind: d.due_at for d in project(s, POLICY).deadlines} == {IDLE: T + timedelta(minutes=50)}


def test_a_resume_clears_the_snapshot_key() -> None:
    s = _suspended(T, T + timedelta(minutes=5))
    assert s.snapshot_key is not None and project(s, POLICY).row.snapshot_key == s.snapshot_key
    s = _run(s, sb.RequestResume(), T + timedelta(hours=1))
    s = _run(s, sb.MarkResumed(provider_ref="ref2"), T + timedelta(hours=1))
    assert (s.snapshot_key, s.snapshot_sha256, s.snapshot_bytes) == (None, None, None)
    assert project(s, POLICY).row.snapshot_key is None


def test_a_stale_idle_timer_decides_nothing() -> None:
    s = _idle_at(T)
    armed = project(s, POLICY).deadlines[0]
    # Activity since the timer was armed: the stream moved on, the old deadline has passed.
    touched = _run(s, sb.Touch(), T + timedelta(minutes=20))
    assert touched.version > armed.version
    assert sb.decide(touched, sb.FireIdleTimeout(timeout=TIMEOUT), armed.due_at) == []
    # The settings changed since it was armed: a longer timeout has not elapsed yet.
    assert sb.decide(s, sb.FireIdleTimeout(timeout=2 * TIMEOUT), armed.due_at) == []


def test_a_stale_retention_timer_decides_nothing() -> None:
    s = _suspended(T, T)
    due = T + RETENTION_TIME
    # Resumed since: not suspended any more.
    resumed = _run(_run(s, sb.RequestResume(), T + timedelta(days=1)), sb.MarkResumed(provider_ref="r"), T)
    assert sb.decide(resumed, timers.FireRetention(retention=RETENTION_TIME), due) == []
    # A longer retention configured since.
    assert sb.decide(s, timers.FireRetention(retention=2 * RETENTION_TIME), due) == []


# ----------------------------------------------------------------------------------- the service


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def service(store: EventStore, clock: Clock) -> SandboxService:
    return SandboxService(store, FakeProvider(), policy=POLICY, clock=clock, sweep_workers=1)


def test_service_suspends_at_exactly_the_idle_deadline(service: SandboxService, clock: Clock) -> None:
    row = service.create("data-app")
    deadline = T + TIMEOUT
    assert service.fire_due(deadline - US).fired == []
    assert service.get(row.id).state == lc.IDLE
    clock.now = deadline
    assert service.fire_due(deadline).fired == [f"{row.id}:idle"]
    assert service.get(row.id).state == lc.SUSPENDED


def test_service_keeps_a_snapshot_for_the_retention_after_its_suspension(
    service: SandboxService, clock: Clock
) -> None:
    row = service.create("data-app")  # the last activity, at T
    clock.now = T + timedelta(days=2)
    service.suspend(row.id)
    now = T + timedelta(days=8)  # active 8 days ago, suspended 6 days ago
    clock.now = now
    assert service.fire_due(now).fired == []
    assert service.get(row.id).state == lc.SUSPENDED
    due = T + timedelta(days=2) + RETENTION_TIME
    assert service.fire_due(due - US).fired == []
    clock.now = due
    assert service.fire_due(due).fired == [f"{row.id}:retention"]
    assert service.get(row.id).state == lc.EXPIRED


def test_service_arms_the_idle_deadline_from_the_last_touch(
    service: SandboxService, store: EventStore, clock: Clock
) -> None:
    row = service.create("data-app")
    clock.now = T + timedelta(minutes=20)
    service.touch(row.id)
    assert [(d.kind, d.due_at) for d in store.all_deadlines()] == [(IDLE, T + timedelta(minutes=50))]
    assert service.fire_due(T + TIMEOUT).fired == []  # the old deadline is gone
    assert service.get(row.id).state == lc.IDLE


def test_service_timer_of_an_old_version_does_nothing(
    service: SandboxService, store: EventStore, clock: Clock
) -> None:
    row = service.create("data-app")
    (armed,) = store.all_deadlines()
    clock.now = T + timedelta(minutes=20)
    service.touch(row.id)
    # Re-arm the old deadline behind the service's back, as a deadline read before the touch would be.
    state = service.load(row.id)
    store.write_projection(replace(project(state, POLICY), deadlines=(armed,)))
    assert service.fire_due(T + TIMEOUT).fired == []
    assert service.get(row.id).state == lc.IDLE
