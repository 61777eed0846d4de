"""The decider's part of set_egress: EgressChanged carries who, what and why; the fold keeps the last."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import InvalidTransition, SandboxBusy
from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.codec import decode, encode
from sandbox_lifecycle.events.records import RecordedEvent

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def _idle() -> sb.Sandbox:
    state = sb.initial("s1")
    for cmd in (sb.Create(kind="data-app", provider="fake"), sb.MarkReady(provider_ref="r1")):
        state = sb.replay("s1", sb.decide(state, cmd, NOW), start=state)
    return state


def test_set_egress_records_who_what_and_why_and_the_fold_keeps_the_last() -> None:
    state = _idle()
    cmd = sb.SetEgress(allow=("pkgs.test",), actor="agent-7", reason="pip install")
    [event] = sb.decide(state, cmd, NOW)
    assert event == ev.EgressChanged(at=NOW, actor="agent-7", reason="pip install", allow=["pkgs.test"])
    state = sb.evolve(state, event)
    assert (state.status, state.egress_allow) == (lc.IDLE, ("pkgs.test",))
    assert sb.decide(state, cmd, NOW) == []  # the same list again: nothing new
    [reset] = sb.decide(state, sb.SetEgress(allow=None, reason="done"), NOW)
    assert reset.allow is None and sb.evolve(state, reset).egress_allow is None
    [closed] = sb.decide(state, sb.SetEgress(allow=()), NOW)
    assert sb.evolve(state, closed).egress_allow == ()  # nothing allowed is not the kind's list


def test_egress_changed_survives_the_codec() -> None:
    event = ev.EgressChanged(at=NOW, actor="a", reason="r", allow=["pkgs.test", "*.example.com:8443"])
    new = encode(event)
    record = RecordedEvent(1, "s1", 3, new.type, new.schema_version, new.data, new.metadata, new.occurred_at)
    assert decode(record) == event


def test_set_egress_is_refused_while_a_side_effect_is_in_flight() -> None:
    state = sb.evolve(_idle(), sb.decide(_idle(), sb.RequestSuspend(), NOW)[0])
    assert state.status == lc.SUSPENDING
    with pytest.raises((InvalidTransition, SandboxBusy)):
        sb.decide(state, sb.SetEgress(allow=("pkgs.test",)), NOW)
