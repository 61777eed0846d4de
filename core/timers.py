"""The timers' commands whose guards live with them: retention, the sandbox's maximum lifetime, and the
warning a timer gives before it acts.

Each is a ``TimerCommand`` the decider (``core/sandbox.py``) hands its state to: a timer re-checks its
own guard when it fires, so a stale one (the sandbox moved on since it was armed) decides to nothing.
When each deadline is armed is the projection's business (``core/projection.py``); docs/lifecycle.md
says what each does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.sandbox import Sandbox, TimerCommand
from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.values import value_class

__all__ = ["EXPIRING", "MAX_LIFETIME_REASON", "FireMaxLifetime", "FireRetention", "WarnExpiry"]

# The reason of a destroy for age, and of a warning (Vercel's webhook calls it ``expiring``).
MAX_LIFETIME_REASON = "max_lifetime"
EXPIRING = "expiring"


def millis(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


@value_class(kw_only=True)
class FireRetention(TimerCommand):
    """The retention timer: destroy if suspended for ``retention``."""

    retention: timedelta
    reason: str = "retention"
    TRIGGER = "retention_elapsed"

    def fire(self, state: Sandbox, base: dict[str, Any], now: datetime) -> list[ev.Event]:
        if state.status != lc.SUSPENDED or state.suspended_at is None:
            return []
        if now - state.suspended_at < self.retention:
            return []
        return [
            ev.RetentionElapsed(
                **base, suspended_since=state.suspended_at, retention_ms=millis(self.retention)
            ),
            ev.DestroyRequested(**base),
        ]


@value_class(kw_only=True)
class FireMaxLifetime(TimerCommand):
    """The lifetime timer: destroy a sandbox ``max_lifetime`` after its creation, whatever its activity.
    Only from a stable state: a side effect in flight finishes first (its outcome re-arms the timer)."""

    max_lifetime: timedelta
    reason: str = MAX_LIFETIME_REASON
    TRIGGER = "max_lifetime"

    def fire(self, state: Sandbox, base: dict[str, Any], now: datetime) -> list[ev.Event]:
        if lc.destination(self.TRIGGER, state.status) is None or state.created_at is None:
            return []
        if now - state.created_at < self.max_lifetime:
            return []
        return [
            ev.MaxLifetimeElapsed(
                **base, created_at=state.created_at, max_lifetime_ms=millis(self.max_lifetime)
            ),
            ev.DestroyRequested(**base),
        ]


@value_class(kw_only=True)
class WarnExpiry(TimerCommand):
    """Warn that ``timer`` acts at ``due_at``: recorded once per deadline, from ``lead`` before it until
    it is due (a late sweep does not warn of what it is about to do anyway)."""

    timer: str
    due_at: datetime
    lead: timedelta
    checkpoint_version: int | None = None
    reason: str = EXPIRING
    TRIGGER = "warn_expiry"

    def fire(self, state: Sandbox, base: dict[str, Any], now: datetime) -> list[ev.Event]:
        if lc.destination(self.TRIGGER, state.status) is None or (self.timer, self.due_at) in state.warned:
            return []
        if not self.due_at - self.lead <= now < self.due_at:
            return []
        return [
            ev.ExpiryWarned(
                **base,
                timer=self.timer,
                due_at=self.due_at,
                lead_ms=millis(self.lead),
                checkpoint_version=self.checkpoint_version,
            )
        ]
