"""Rules of ``core/admission.py`` that the 2026-12-08 mutation sample got past (docs/testing.md,
"Mutation scores, 2026-12-08"), on the fakes: no Docker, no sleeps past a fraction of a second."""

from __future__ import annotations

from datetime import timedelta

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def test_the_least_recently_active_idle_sandbox_is_the_one_suspended_not_the_first_listed() -> None:
    clock = Clock()
    service = SandboxService(
        InMemoryEventStore(),
        FakeProvider(),
        policy=POLICY,
        clock=clock,
        capacity=Capacity(max_live=2, wait=timedelta(milliseconds=200)),
    )
    first = service.create("data-app").id
    clock.advance(seconds=60)
    second = service.create("data-app").id
    clock.advance(seconds=60)
    # The first one created is now the most recently active: the second is the one to take.
    service.touch(first)
    clock.advance(seconds=60)

    service.create("data-app")

    assert service.get(first).state == lc.IDLE
    assert service.get(second).state == lc.SUSPENDED
