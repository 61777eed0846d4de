"""A pool refill that fails stops for that sweep and says so, on the fakes.

Pins behaviours one-line mutants of core/pool.py changed unnoticed (docs/testing.md)."""

from __future__ import annotations

from datetime import timedelta

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import SandboxError
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def test_a_failed_addition_is_reported_and_ends_the_refill_until_the_next_sweep() -> None:
    provider = FakeProvider()
    service = SandboxService(
        InMemoryEventStore(),
        provider,
        policy=POLICY,
        clock=Clock(),
        capacity=Capacity(warm_pool={"data-app": 3}),
    )
    provider.fail["create"] = SandboxError("no capacity at the provider")
    report = service.maintain_pools()
    assert [line for line in report if "data-app pool: adding a sandbox failed" in line]
    assert "no capacity at the provider" in "".join(report)
    assert not [line for line in report if "joined" in line]
    assert [op for op, _ in provider.calls].count("create") == 1
    assert [line for line in service.maintain_pools() if "joined the data-app pool" in line] != []
    assert len([r for r in service.list(lc.IDLE) if r.conversation_id is None]) == 3
