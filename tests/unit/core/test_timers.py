"""The lifetime timer and the warnings before a timer acts, at their edges: the decider's guards and the
deadlines the projection arms (the service over a fake clock: tests/contract/core/test_timer_warnings.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core import timers
from sandbox_lifecycle.core.projection import (
    CHECKPOINT,
    IDLE,
    LEASE,
    MAX_LIFETIME,
    RETENTION,
    WARNING,
    Policy,
    expiring,
    project,
)
from sandbox_lifecycle.events import types as ev

T = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
LIFETIME = timedelta(hours=8)
LEAD = timedelta(seconds=60)
IDLE_TIMEOUT = timedelta(minutes=30)
RETENTION_TIME = timedelta(days=7)
POLICY = Policy(
    idle_timeout=IDLE_TIMEOUT,
    retention=RETENTION_TIME,
    lease=timedelta(minutes=10),
    max_lifetime=LIFETIME,
    warning_lead=LEAD,
)


def _run(state: sb.Sandbox, cmd: sb.Command, at: datetime) -> sb.Sandbox:
    return sb.replay(state.id, sb.decide(state, cmd, at), start=state)


def _idle(at: datetime = T) -> sb.Sandbox:
    s = _run(sb.initial("s"), sb.Create(kind="data-app", provider="fake"), at)
    return _run(s, sb.MarkReady(provider_ref="ref"), at)


def _suspended(at: datetime, kept: bool = False) -> sb.Sandbox:
    s = _run(_idle(T), sb.RequestSuspend(), at)
    return _run(s, sb.MarkSuspended(snapshot_key=s.pending_snapshot_key or "", kept=kept), at)


def _deadlines(state: sb.Sandbox, policy: Policy = POLICY) -> dict[str, datetime]:
    return {d.kind: d.due_at for d in project(state, policy).deadlines}


# ------------------------------------------------------------------------------- the lifetime timer


def test_the_lifetime_timer_fires_at_exactly_the_lifetime_and_destroys_for_max_lifetime() -> None:
    s = _run(_idle(), sb.Touch(), T + LIFETIME - timedelta(seconds=1))  # activity does not save it
    fire = timers.FireMaxLifetime(max_lifetime=LIFETIME)
    assert sb.decide(s, fire, T + LIFETIME - US) == []
    events = sb.decide(s, fire, T + LIFETIME)
    assert [type(e) for e in events] == [ev.MaxLifetimeElapsed, ev.DestroyRequested]
    assert all(e.actor == "scheduler" and e.reason == "max_lifetime" for e in events)
    lifetime = events[0]
    assert isinstance(lifetime, ev.MaxLifetimeElapsed)
    assert (lifetime.created_at, lifetime.max_lifetime_ms) == (T, 8 * 3600 * 1000)
    after = sb.replay(s.id, events, start=s)
    assert after.status == lc.DESTROYING
    after = _run(after, sb.MarkDestroyed(actor="scheduler"), T + LIFETIME)
    assert (after.status, after.expired_reason) == (lc.EXPIRED, "max_lifetime")


@pytest.mark.parametrize("status", [lc.RUNNING, lc.SUSPENDED])
def test_the_lifetime_timer_destroys_a_running_or_suspended_sandbox_too(status: str) -> None:
    s = _run(_idle(), sb.StartTurn(turn_id="t"), T)
    if status == lc.SUSPENDED:
        s = _suspended(T + timedelta(minutes=1))
    assert s.status == status
    assert _deadlines(s)[MAX_LIFETIME] == T + LIFETIME
    after = _run(s, timers.FireMaxLifetime(max_lifetime=LIFETIME), T + LIFETIME)
    assert after.status == lc.DESTROYING


def test_a_side_effect_in_flight_finishes_before_the_lifetime_timer_is_armed_again() -> None:
    suspending = _run(_idle(), sb.RequestSuspend(), T + LIFETIME - US)
    assert MAX_LIFETIME not in _deadlines(suspending)
    assert _deadlines(suspending)[LEASE] == T + LIFETIME - US + timedelta(minutes=10)
    assert sb.decide(suspending, timers.FireMaxLifetime(max_lifetime=LIFETIME), T + 2 * LIFETIME) == []
    done = _run(suspending, sb.MarkSuspended(snapshot_key="k"), T + LIFETIME)
    assert _deadlines(done)[MAX_LIFETIME] == T + LIFETIME  # already due: the next sweep destroys it


def test_no_lifetime_deadline_without_the_setting_or_once_expired() -> None:
    assert MAX_LIFETIME not in _deadlines(_idle(), Policy())
    gone = _run(_run(_idle(), sb.Destroy(), T), sb.MarkDestroyed(), T)
    assert _deadlines(gone) == {}
    assert sb.decide(gone, timers.FireMaxLifetime(max_lifetime=LIFETIME), T + LIFETIME) == []


def test_a_pooled_sandbox_has_a_lifetime_but_no_warning() -> None:
    pooled = _run(_idle(), sb.Pool(), T)
    assert _deadlines(pooled) == {MAX_LIFETIME: T + LIFETIME}  # no idle timer, no backend to warn


def test_a_fork_lives_from_its_own_creation() -> None:
    fork = _run(
        sb.initial("f"),
        sb.Fork(source_id="s", source_version=3, kind="data-app", provider="fake", snapshot_key="k"),
        T + timedelta(hours=5),
    )
    assert _deadlines(fork)[MAX_LIFETIME] == T + timedelta(hours=5) + LIFETIME


# ---------------------------------------------------------------------------------------- warnings


def test_the_warning_is_armed_the_lead_before_the_first_timer_that_acts() -> None:
    s = _idle()
    assert _deadlines(s) == {
        IDLE: T + IDLE_TIMEOUT,
        MAX_LIFETIME: T + LIFETIME,
        WARNING: T + IDLE_TIMEOUT - LEAD,
    }
    assert _deadlines(s, dataclasses.replace(POLICY, warning_lead=timedelta(0))) == {
        IDLE: T + IDLE_TIMEOUT,
        MAX_LIFETIME: T + LIFETIME,
    }


def test_a_warning_is_recorded_once_in_its_window_and_the_next_timer_is_warned_of_next() -> None:
    s = _idle()
    warn = timers.WarnExpiry(timer=IDLE, due_at=T + IDLE_TIMEOUT, lead=LEAD)
    assert sb.decide(s, warn, T + IDLE_TIMEOUT - LEAD - US) == []  # too early
    assert sb.decide(s, warn, T + IDLE_TIMEOUT) == []  # too late: the timer acts now anyway
    events = sb.decide(s, warn, T + IDLE_TIMEOUT - LEAD)
    assert len(events) == 1 and isinstance(events[0], ev.ExpiryWarned)
    w = events[0]
    assert (w.timer, w.due_at, w.lead_ms, w.actor, w.reason) == (
        IDLE,
        T + IDLE_TIMEOUT,
        60_000,
        "scheduler",
        "expiring",
    )
    warned = sb.replay(s.id, events, start=s)
    assert warned.warned == ((IDLE, T + IDLE_TIMEOUT),)
    assert warned.last_activity_at == s.last_activity_at  # a warning is no activity
    assert sb.decide(warned, warn, T + IDLE_TIMEOUT - US) == []  # once per deadline
    assert _deadlines(warned)[WARNING] == T + LIFETIME - LEAD  # the lifetime's turn


def test_a_touch_moves_the_idle_deadline_and_owes_a_new_warning() -> None:
    warned = _run(
        _idle(), timers.WarnExpiry(timer=IDLE, due_at=T + IDLE_TIMEOUT, lead=LEAD), T + IDLE_TIMEOUT - LEAD
    )
    touched = _run(warned, sb.Touch(), T + IDLE_TIMEOUT - timedelta(seconds=10))
    new_due = T + IDLE_TIMEOUT - timedelta(seconds=10) + IDLE_TIMEOUT
    assert _deadlines(touched)[IDLE] == new_due
    assert _deadlines(touched)[WARNING] == new_due - LEAD
    assert expiring(touched, POLICY)[0].timer == IDLE
    again = _run(touched, timers.WarnExpiry(timer=IDLE, due_at=new_due, lead=LEAD), new_due - LEAD)
    assert again.warned == ((IDLE, new_due),)  # the latest per timer, not a growing list


def test_retention_and_checkpoint_collection_are_warned_of_with_the_checkpoint_named() -> None:
    s = _suspended(T + timedelta(minutes=1), kept=True)
    assert [(e.timer, e.due_at) for e in expiring(s, POLICY)] == [
        (RETENTION, T + timedelta(minutes=1) + RETENTION_TIME),
        (MAX_LIFETIME, T + LIFETIME),
    ]
    resumed = _run(
        _run(s, sb.RequestResume(), T + timedelta(hours=1)),
        sb.MarkResumed(provider_ref="r"),
        T + timedelta(hours=1),
    )
    assert RETENTION not in _deadlines(resumed)  # retention runs only while suspended
    # The checkpoint it resumed from is not collected while it runs (its next suspend reuses its pieces):
    # nothing to warn of. After a second suspend and resume, the first one is owed a warning.
    assert [e for e in expiring(resumed, POLICY) if e.timer == CHECKPOINT] == []
    second = _run(
        _run(resumed, sb.RequestSuspend(), T + timedelta(hours=2)),
        sb.MarkSuspended(snapshot_key="snapshots/second", kept=True),
        T + timedelta(hours=2),
    )
    again = _run(
        _run(second, sb.RequestResume(), T + timedelta(hours=3)),
        sb.MarkResumed(provider_ref="r2"),
        T + timedelta(hours=3),
    )
    owed = [e for e in expiring(again, POLICY) if e.timer == CHECKPOINT]
    assert owed == [(CHECKPOINT, T + timedelta(minutes=1) + RETENTION_TIME, s.checkpoints[0].version)]


def test_no_warning_in_flight_or_once_expired() -> None:
    suspending = _run(_idle(), sb.RequestSuspend(), T)
    assert WARNING not in _deadlines(suspending)
    warn = timers.WarnExpiry(timer=IDLE, due_at=T + IDLE_TIMEOUT, lead=LEAD)
    assert sb.decide(suspending, warn, T + IDLE_TIMEOUT - LEAD) == []


@given(
    lead_s=st.integers(1, 7200),
    offset_s=st.integers(-8000, 8000),
    timer=st.sampled_from([IDLE, RETENTION, CHECKPOINT, MAX_LIFETIME]),
)
def test_a_warning_is_recorded_exactly_inside_its_window(lead_s: int, offset_s: int, timer: str) -> None:
    s = _idle()
    due = T + timedelta(hours=3)
    now = due + timedelta(seconds=offset_s)
    lead = timedelta(seconds=lead_s)
    events = sb.decide(s, timers.WarnExpiry(timer=timer, due_at=due, lead=lead), now)
    assert bool(events) == (due - lead <= now < due)


def test_a_short_idle_timeout_is_not_stretched_by_the_retry_pause_of_a_failed_suspend() -> None:
    # Only a sandbox idle again after a failed suspend waits SUSPEND_RETRY_AFTER (a minute) for its next one.
    short = dataclasses.replace(POLICY, idle_timeout=timedelta(seconds=10))
    assert _deadlines(_idle(), short)[IDLE] == T + timedelta(seconds=10)
    failed_at = T + timedelta(seconds=1)
    failed = _run(_run(_idle(), sb.RequestSuspend(), T), sb.MarkFailed(error="disk full"), failed_at)
    assert _deadlines(failed, short)[IDLE] == failed_at + timedelta(seconds=60)


def test_a_policy_built_in_code_has_the_documented_defaults_and_no_lifetime_or_warnings() -> None:
    p = Policy()
    assert (p.idle_timeout, p.retention, p.lease) == (
        timedelta(minutes=30),
        timedelta(days=7),
        timedelta(minutes=10),
    )
    assert (p.max_lifetime, p.warning_lead) == (None, timedelta(0))
    # Activity is coalesced over a tenth of the idle timeout, a minute at most.
    assert p.activity_window == timedelta(seconds=60)
    assert Policy(idle_timeout=timedelta(minutes=5)).activity_window == timedelta(seconds=30)
