"""Rules of ``core/egress.py`` that the 2026-12-08 mutation sample got past (docs/testing.md,
"Mutation scores, 2026-12-08"), on the fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_lifecycle.core import egress
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import EgressRefused
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def test_a_policy_changed_under_every_apply_ends_after_max_applies_with_the_sandbox_as_last_read() -> None:
    provider = FakeProvider()
    service = SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=Clock())
    sid = service.create("data-app").id
    original = provider.set_egress
    applied: list[object] = []

    def changed_meanwhile(sandbox_id: str, ref: str, kind: str, allow: object) -> None:
        # Another caller records a new list while each apply runs (and leaves applying it to itself).
        original(sandbox_id, ref, kind, allow)  # type: ignore[arg-type]
        applied.append(allow)
        host = (f"h{len(applied)}.test",)
        service.kernel.run(sid, lambda _: sb.SetEgress(allow=host, actor="racer", reason="race"), random_id())

    provider.set_egress = changed_meanwhile  # type: ignore[method-assign]
    state = egress.set_egress(service.kernel, sid, ["pkgs.test"], "open", "first")

    # Bounded: the caller re-applies at most MAX_APPLIES times, then hands back what it read last.
    assert len(applied) == egress.MAX_APPLIES
    assert isinstance(state, sb.Sandbox)
    assert state.egress_allow == (f"h{egress.MAX_APPLIES}.test",)
    assert service.load(sid).egress_allow == state.egress_allow


def test_one_string_for_allow_is_refused_with_nothing_recorded_or_applied() -> None:
    provider = FakeProvider()
    service = SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=Clock())
    sid = service.create("data-app").id
    version = service.get(sid).version

    with pytest.raises(EgressRefused, match="not one string") as refused:
        service.set_egress(sid, "pkgs.test")  # type: ignore[arg-type]  # the mistake under test
    assert refused.value.sandbox == sid
    assert str(refused.value).startswith(f"egress of sandbox {sid} not changed: ")

    assert service.get(sid).version == version
    assert not [c for c in provider.calls if c[0] == "set_egress"]


def test_a_refused_entry_names_the_sandbox_and_the_providers_reason() -> None:
    provider = FakeProvider()
    service = SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=Clock())
    sid = service.create("data-app").id

    with pytest.raises(EgressRefused) as refused:
        service.set_egress(sid, ["pkgs.test", "169.254.169.254"])

    assert refused.value.sandbox == sid
    assert str(refused.value).startswith(f"egress of sandbox {sid} not changed: ")
    assert "169.254.169.254" in str(refused.value)
