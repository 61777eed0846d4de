"""Rules of ``core/admission.py`` that the 2026-12-08 mutation sample got past (docs/testing.md,
"Mutation scores, 2026-12-08"), on the fakes: no Docker, no sleeps past a fraction of a second."""

from __future__ import annotations

import threading
from datetime import timedelta

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


def test_a_full_fleet_with_nothing_idle_is_polled_with_backoff_not_in_a_busy_loop() -> None:
    service = SandboxService(
        InMemoryEventStore(),
        FakeProvider(),
        policy=POLICY,
        clock=Clock(),
        capacity=Capacity(max_live=1, wait=timedelta(milliseconds=500)),
    )
    tries = 0

    def refused() -> None:
        nonlocal tries
        tries += 1
        raise CapacityRefused("s", CapacityLimit(states=(lc.IDLE,), limit=1, kind=None), 1)

    with pytest.raises(CapacityExceeded):
        Admission(service.kernel).admit("data-app", refused, actor="test")

    # 20, 40, 80, 160, 250 ms ... apart: a handful of tries in half a second, not thousands.
    assert 2 <= tries <= 10


def test_a_waiter_queued_behind_a_slow_one_gives_up_at_its_own_budget() -> None:
    service = SandboxService(
        InMemoryEventStore(),
        FakeProvider(),
        policy=POLICY,
        clock=Clock(),
        capacity=Capacity(max_live=1, wait=timedelta(milliseconds=200)),
    )
    admission = Admission(service.kernel)
    inside, release, first_done = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        inside.set()
        release.wait(5)  # bounded: the test releases it as soon as the second waiter is answered

    def first() -> None:
        admission.admit("data-app", slow, actor="first")
        first_done.set()

    def refused() -> None:
        raise CapacityRefused("s", CapacityLimit(states=(lc.IDLE,), limit=1, kind=None), 1)

    holder = threading.Thread(target=first)
    holder.start()
    try:
        assert inside.wait(5)
        with pytest.raises(CapacityExceeded):
            admission.admit("data-app", refused, actor="second")
        # Answered while the first waiter still held the head of the queue.
        assert not first_done.is_set()
    finally:
        release.set()
        holder.join(10)
