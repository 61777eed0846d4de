"""One caller that keeps being refused evicts a bounded number of idle sandboxes, on the fakes.

Pins a behaviour a one-line mutant of core/capacity.py changed unnoticed (docs/testing.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.admission import Admission
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import CapacityExceeded
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.records import CapacityLimit, CapacityRefused
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def test_a_caller_refused_after_every_eviction_evicts_five_sandboxes_at_most() -> None:
    clock = Clock()

    def ticking() -> datetime:
        return clock.advance(seconds=2)  # no sandbox is "fresh" (idle under a second)

    service = SandboxService(
        InMemoryEventStore(),
        FakeProvider(),
        policy=POLICY,
        clock=ticking,
        capacity=Capacity(max_live=20, wait=timedelta(milliseconds=200)),
    )
    ids = [service.create("data-app").id for _ in range(8)]
    attempts: list[int] = []

    def taken_by_another_replica_each_time() -> None:
        attempts.append(1)
        raise CapacityRefused("newcomer", CapacityLimit(tuple(sorted(lc.HOLDS_COMPUTE)), 8), 8)

    with pytest.raises(CapacityExceeded):
        Admission(service.kernel).admit("data-app", taken_by_another_replica_each_time, actor="test")
    evicted = [sid for sid in ids if service.get(sid).state not in lc.HOLDS_COMPUTE]
    assert len(evicted) == 5
    assert evicted == ids[:5]  # the least recently active first
    assert len(attempts) >= 6  # one try after each eviction, and at least one before the first
