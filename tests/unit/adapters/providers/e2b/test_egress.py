"""set_egress on E2B through the real SDK (``update_network``) against the loopback E2B server: the
call replaces the sandbox's whole egress configuration, so it carries the deny-all and the allow-list,
the kind's again on a reset; a resumed sandbox gets the log's policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core.errors import EgressRefused, ProviderLost
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fake_e2b import FakeE2B
from tests.support.fakes import Clock, InMemoryEventStore

NETWORK = r"/sandboxes/[^/]+/network"


def test_update_network_carries_the_rules_and_a_reset_the_kinds(
    provider: E2BProvider, fake_e2b: FakeE2B, settings: E2BSettings
) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    provider.set_egress("sbx-1", ref, DATA_APP, provider.check_egress(["PKGS.test", "files.pkgs.test"]))
    [put] = fake_e2b.requests("PUT", NETWORK)
    assert put.path == f"/sandboxes/{ref}/network" and put.status == 204
    assert put.body == {"allowOut": ["pkgs.test", "files.pkgs.test"], "denyOut": ["0.0.0.0/0"]}
    assert fake_e2b.sandbox(ref).network == put.body
    provider.set_egress("sbx-1", ref, DATA_APP, None)
    kinds = list(settings.egress_allow[DATA_APP])
    assert fake_e2b.sandbox(ref).network == {"allowOut": kinds, "denyOut": ["0.0.0.0/0"]}
    provider.set_egress("sbx-1", ref, DATA_APP, ())
    assert fake_e2b.sandbox(ref).network == {"allowOut": [], "denyOut": ["0.0.0.0/0"]}


def test_a_gone_sandbox_is_lost(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    fake_e2b.lose(ref)
    with pytest.raises(ProviderLost):
        provider.set_egress("sbx-1", ref, DATA_APP, ("pkgs.test",))


def test_the_service_records_applies_and_reapplies_after_a_resume(
    provider: E2BProvider, fake_e2b: FakeE2B
) -> None:
    policy = Policy(
        idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=5)
    )
    service = SandboxService(InMemoryEventStore(), provider, policy=policy, clock=Clock())
    sid = service.create(DATA_APP).id
    ref = service.get(sid).provider_ref
    assert ref is not None
    with pytest.raises(EgressRefused):
        service.set_egress(sid, ["8.8.8.8"])  # E2B would take it; the one check refuses it on both
    assert fake_e2b.requests("PUT", NETWORK) == []
    service.set_egress(sid, ["pkgs.test"], reason="pip install", actor="agent")
    service.suspend(sid)
    service.resume(sid)
    puts = fake_e2b.requests("PUT", NETWORK)
    assert [p.body["allowOut"] for p in puts] == [["pkgs.test"], ["pkgs.test"]]
    assert puts[-1].status == 204  # applied to the running, resumed sandbox
    assert fake_e2b.sandbox(ref).network["allowOut"] == ["pkgs.test"]
