"""Capacity's defaults and bounds at their edges (issue 20: gaps targeted mutation testing found), on the
fakes: no Docker, no sleeps longer than the short wait below."""

from __future__ import annotations

from datetime import datetime, timedelta

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import SandboxError
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def test_the_default_wait_for_a_slot_is_the_documented_30_seconds() -> None:
    # docs/capacity.md: SANDBOX_CAPACITY_WAIT_MS defaults to 30000.
    assert Capacity().wait == timedelta(milliseconds=30_000)
    assert not Capacity().bounded and Capacity(max_live=3).bounded
    assert Capacity(max_live_per_kind={"data-app": 1}).bounded


class _SuspendFails(FakeProvider):
    """A provider that cannot suspend the sandboxes named in ``broken``."""

    broken: set[str]
    tried: list[str]

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str):  # type: ignore[no-untyped-def]
        self.tried.append(sandbox_id)
        if sandbox_id in self.broken:
            raise SandboxError(f"cannot suspend {sandbox_id}")
        return super().suspend(sandbox_id, ref, kind, snapshot_key)


def test_an_eviction_tries_up_to_five_idle_sandboxes_before_it_gives_up() -> None:
    clock = Clock()

    def ticking() -> datetime:
        # Two seconds a read: a sandbox whose suspend just failed is not "fresh" (idle under a second)
        # on the next try, so a try that stopped short of the fifth would keep picking the same four.
        return clock.advance(seconds=2)

    provider = _SuspendFails()
    provider.broken, provider.tried = set(), []
    service = SandboxService(
        InMemoryEventStore(),
        provider,
        policy=POLICY,
        clock=ticking,
        capacity=Capacity(max_live=5, wait=timedelta(milliseconds=300)),
    )
    ids = [service.create("data-app").id for _ in range(5)]  # each less recently active than the next
    # The four least recently active cannot be suspended: the fifth makes the room, in the first try.
    provider.broken = set(ids[:4])
    newcomer = service.create("data-app").id
    assert service.get(newcomer).state in lc.HOLDS_COMPUTE
    assert service.get(ids[4]).state not in lc.HOLDS_COMPUTE
    # The broken ones were each tried once, and are idle again, not left half-suspended.
    assert [service.get(sid).state for sid in ids[:4]] == [lc.IDLE] * 4
    assert provider.tried == ids
