"""The decider's part of set_credentials: CredentialsSet carries the host, the header names, who and why;
the state changes by its version only (the values are never the log's)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import InvalidTransition, SandboxExpired
from sandbox_lifecycle.events import types as ev

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _state(status: str) -> sb.Sandbox:
    return sb.Sandbox(id="s1", status=status, version=3, kind="data-app")


@pytest.mark.parametrize("status", [lc.IDLE, lc.RUNNING, lc.SUSPENDED])
def test_every_call_is_recorded_with_the_names_only(status: str) -> None:
    cmd = sb.SetCredentials(host="api.service.test", headers=("Authorization",), actor="a7", reason="r")
    events = sb.decide(_state(status), cmd, NOW)
    assert events == [
        ev.CredentialsSet(at=NOW, actor="a7", reason="r", host="api.service.test", headers=["Authorization"])
    ]
    # The same again is recorded again: each call is a use.
    assert sb.decide(_state(status), cmd, NOW) == events
    after = sb.replay("s1", events, start=_state(status))
    assert after == _state(status)._replace(version=4)


@pytest.mark.parametrize("status", [lc.CREATING, lc.SUSPENDING, lc.RESUMING, lc.DESTROYING, lc.NEW])
def test_refused_while_a_side_effect_is_in_flight(status: str) -> None:
    with pytest.raises(InvalidTransition):
        sb.decide(_state(status), sb.SetCredentials(host="h.test"), NOW)


def test_refused_on_an_expired_sandbox() -> None:
    with pytest.raises(SandboxExpired):
        sb.decide(_state(lc.EXPIRED), sb.SetCredentials(host="h.test"), NOW)
