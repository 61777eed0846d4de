"""set_egress through the service, on the fake provider and every event store: recorded with who, what
and why before it is applied, refused entries record nothing, and the policy a resumed sandbox gets is
the log's (a suspended sandbox may be changed too)."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.async_service import AsyncSandboxService
from sandbox_lifecycle.core.errors import EgressRefused, ProviderError, SandboxExpired
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.service import SandboxService
from tests.contract.core.test_service import POLICY
from tests.support.fakes import Clock, FakeProvider


@pytest.fixture
def service(store: EventStore, provider: FakeProvider) -> SandboxService:
    return SandboxService(store, provider, policy=POLICY, clock=Clock())


def _changes(service: SandboxService, sid: str) -> list[tuple[object, str, str]]:
    return [
        (h.data.get("allow"), h.actor, h.reason) for h in service.history(sid) if h.type == "EgressChanged"
    ]


def test_set_egress_is_recorded_with_who_what_and_why_then_applied(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app").id
    row = service.set_egress(sid, ["PKGS.test", "files.pkgs.test"], reason="pip install", actor="agent-7")
    assert row.state == lc.IDLE
    assert provider.instances[sid].egress_allow == ("pkgs.test", "files.pkgs.test")
    service.set_egress(sid, None, reason="run generated code", actor="agent-7")
    assert provider.instances[sid].egress_allow is None
    assert _changes(service, sid) == [
        (["pkgs.test", "files.pkgs.test"], "agent-7", "pip install"),
        (None, "agent-7", "run generated code"),
    ]
    entry = next(h for h in service.history(sid) if h.type == "EgressChanged")
    assert (entry.from_state, entry.to_state) == (lc.IDLE, lc.IDLE)
    # The same list again records nothing new, and is applied again (a retry after a failed apply).
    version = service.get(sid).version
    service.set_egress(sid, None)
    assert service.get(sid).version == version
    assert [c for c in provider.calls if c[0] == "set_egress"] == [("set_egress", sid)] * 3


@pytest.mark.parametrize("entry", ["10.0.0.1", "169.254.169.254", "localhost", "*", "10.0.0.0/8", "a b"])
def test_a_refused_entry_records_nothing_and_applies_nothing(
    service: SandboxService, provider: FakeProvider, entry: str
) -> None:
    sid = service.create("data-app").id
    version = service.get(sid).version
    with pytest.raises(EgressRefused, match="not changed"):
        service.set_egress(sid, ["pkgs.test", entry])
    with pytest.raises(EgressRefused):
        service.set_egress(sid, "pkgs.test")  # type: ignore[arg-type]  # a string is not a list of hosts
    assert service.get(sid).version == version
    assert ("set_egress", sid) not in provider.calls


def test_the_policy_survives_a_suspend_and_a_resume_as_the_log_says(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app").id
    service.set_egress(sid, ["pkgs.test"], reason="pip install")
    service.suspend(sid)
    assert sid not in provider.instances
    calls = len(provider.calls)
    service.resume(sid)
    # The new instance starts under the log's policy (the resume carries it), never under its kind's
    # list until a set_egress narrows it.
    assert provider.instances[sid].egress_allow == ("pkgs.test",)
    assert ("set_egress", sid) not in provider.calls[calls:]
    assert service.load(sid).egress_allow == ("pkgs.test",)


def test_a_suspended_sandbox_may_be_changed_and_gets_the_change_when_it_resumes(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app").id
    service.set_egress(sid, ["pkgs.test"])
    service.suspend(sid)
    calls = len(provider.calls)
    assert service.set_egress(sid, ["example.com"], reason="next step").state == lc.SUSPENDED
    assert provider.calls[calls:] == []  # nothing live to apply it to
    service.resume(sid)
    assert provider.instances[sid].egress_allow == ("example.com",)
    service.suspend(sid)
    service.set_egress(sid, None)
    calls = len(provider.calls)
    service.resume(sid)
    assert provider.instances[sid].egress_allow is None
    assert ("set_egress", sid) not in provider.calls[calls:]  # the kind's list needs no call on resume


def test_a_failed_apply_leaves_the_log_as_the_truth_and_a_retry_applies_it(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app").id
    provider.fail["set_egress"] = ProviderError("engine hiccup")
    with pytest.raises(ProviderError, match="hiccup"):
        service.set_egress(sid, ["pkgs.test"])
    assert service.load(sid).egress_allow == ("pkgs.test",)
    assert provider.instances[sid].egress_allow is None
    service.set_egress(sid, ["pkgs.test"])
    assert provider.instances[sid].egress_allow == ("pkgs.test",)


def test_an_expired_sandbox_refuses_a_change(service: SandboxService) -> None:
    sid = service.create("data-app").id
    service.destroy(sid)
    with pytest.raises(SandboxExpired):
        service.set_egress(sid, ["pkgs.test"])


def test_the_async_service_sets_egress_alike(service: SandboxService, provider: FakeProvider) -> None:
    async def main() -> str:
        async with AsyncSandboxService(service) as aservice:
            sid = (await aservice.create("data-app")).id
            await aservice.set_egress(sid, ["pkgs.test"], reason="pip install", actor="async")
            assert provider.instances[sid].egress_allow == ("pkgs.test",)
            await aservice.set_egress(sid, None)
            return sid

    sid = asyncio.run(main())
    assert _changes(service, sid) == [(["pkgs.test"], "async", "pip install"), (None, "api", "user")]


def test_two_callers_applying_out_of_order_leave_the_logs_latest_in_force(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app").id
    original = provider.set_egress
    raced = []

    def late(sandbox_id: str, ref: str, kind: str, allow: object) -> None:
        # The first caller recorded its list; before it applies, a second caller records and applies its
        # own. The first then applies its (older) list last.
        if not raced:
            raced.append(True)
            service.set_egress(sid, None, reason="close", actor="second")
        original(sandbox_id, ref, kind, allow)  # type: ignore[arg-type]

    provider.set_egress = late  # type: ignore[method-assign]
    service.set_egress(sid, ["pkgs.test"], reason="open", actor="first")
    assert service.load(sid).egress_allow is None
    assert provider.instances[sid].egress_allow is None
