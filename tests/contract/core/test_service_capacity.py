"""Capacity and warm pools through the service, on the fake provider and every event store."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import CapacityExceeded
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))
SHORT = timedelta(milliseconds=200)


def make(store: EventStore, clock: Clock, **capacity: object) -> SandboxService:
    return SandboxService(store, FakeProvider(), policy=POLICY, clock=clock, capacity=Capacity(**capacity))  # type: ignore[arg-type]


def live(service: SandboxService) -> list[str]:
    return sorted(r.id for r in service.list() if lc.holds_compute(r.state, r.provider_ref))


def reasons(service: SandboxService, sid: str) -> list[tuple[str, str]]:
    return [(h.type, h.reason) for h in service.history(sid)]


def warm_turn(service: SandboxService, clock: Clock, conversation: str, kind: str = "data-app") -> str:
    with service.turn(conversation, kind, keep_warm=True) as sbx:
        sbx.exec(["true"])
    clock.advance(seconds=10)
    return sbx.id


def test_a_turn_at_capacity_suspends_the_least_recently_active_idle_sandbox(
    store: EventStore, clock: Clock
) -> None:
    service = make(store, clock, max_live=2, wait=SHORT)
    oldest = warm_turn(service, clock, "c1")
    newer = warm_turn(service, clock, "c2")

    third = warm_turn(service, clock, "c3")

    assert service.get(oldest).state == lc.SUSPENDED
    assert ("SuspendRequested", "capacity") in reasons(service, oldest)
    assert live(service) == sorted([newer, third])
    # c1 comes back the same way: the least recently active idle one (c2 now) makes room.
    assert warm_turn(service, clock, "c1") == oldest
    assert service.get(newer).state == lc.SUSPENDED
    assert verify(service.store, service.policy) == []


def test_when_every_live_sandbox_runs_a_turn_the_caller_waits_then_gets_capacity_exceeded(
    store: EventStore, clock: Clock
) -> None:
    service = make(store, clock, max_live=2, wait=SHORT)
    with ExitStack() as turns:
        turns.enter_context(service.turn("c1", "data-app"))
        turns.enter_context(service.turn("c2", "data-app"))
        with (
            pytest.raises(CapacityExceeded, match="2 sandboxes already hold compute") as info,
            service.turn("c3", "data-app"),
        ):
            pass
        assert info.value.limit == 2 and info.value.waited == pytest.approx(0.2)
        assert len(live(service)) == 2
    # Nothing was left of the refused turn: no sandbox, no stream.
    assert {r.conversation_id for r in service.list()} == {"c1", "c2"}


def test_a_waiter_gets_the_slot_a_turn_frees(store: EventStore, clock: Clock) -> None:
    service = make(store, clock, max_live=1, wait=timedelta(seconds=20))
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        with service.turn("c1", "data-app"):
            started.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    assert started.wait(20)
    threading.Timer(0.2, release.set).start()
    with service.turn("c2", "data-app") as sbx:
        assert sbx.exec(["true"]).exit_code == 0
    holder.join(20)
    assert verify(service.store, service.policy) == []


def test_resume_and_exec_at_capacity_make_room_too(store: EventStore, clock: Clock) -> None:
    service = make(store, clock, max_live=1, wait=SHORT)
    with service.turn("c1", "data-app") as first:
        pass  # suspended on exit
    other = warm_turn(service, clock, "c2")
    # An exec on the suspended one resumes it, and the idle one makes room.
    assert service.exec(first.id, ["true"]).exit_code == 0
    assert service.get(other).state == lc.SUSPENDED
    clock.advance(seconds=10)  # a sandbox resumed a moment ago is left to the turn about to use it
    assert service.resume(other).state == lc.IDLE
    assert service.get(first.id).state == lc.SUSPENDED


def test_a_kind_limit_evicts_only_its_kind(store: EventStore, clock: Clock) -> None:
    service = make(store, clock, max_live_per_kind={"ai-writeback": 1}, wait=SHORT)
    app = warm_turn(service, clock, "c1", "data-app")
    wb = warm_turn(service, clock, "c2", "ai-writeback")
    wb2 = warm_turn(service, clock, "c3", "ai-writeback")
    assert service.get(app).state == lc.IDLE
    assert service.get(wb).state == lc.SUSPENDED and service.get(wb2).state == lc.IDLE


def test_the_warm_pool_is_filled_claimed_refilled_and_drained(store: EventStore, clock: Clock) -> None:
    service = make(store, clock, warm_pool={"data-app": 2})
    service.maintain_pools()
    pooled = live(service)
    assert len(pooled) == 2
    # Pooled sandboxes wait for a claim, not on an idle timer.
    assert not [d for d in service.store.all_deadlines() if d.kind == "idle"]

    with service.turn("conv-a", "data-app") as sbx:
        assert sbx.id in pooled
        assert sbx.exec(["true"]).exit_code == 0
    service.pools.settle()
    claimed = service.history(sbx.id)
    assert [h.type for h in claimed][:4] == ["CreationRequested", "Created", "Pooled", "Claimed"]
    assert claimed[3].data == {"conversation_id": "conv-a"} and claimed[2].reason == "warm_pool"
    assert service.get(sbx.id).conversation_id == "conv-a"
    # Refilled in the background: two pooled again, besides the claimed one.
    assert len([r for r in service.list(lc.IDLE) if r.conversation_id is None]) == 2

    service.capacity = Capacity(warm_pool={"data-app": 0})
    drained = service.maintain_pools()
    assert len(drained) == 2
    assert [r.expired_reason for r in service.list(lc.EXPIRED)] == ["pool_drained", "pool_drained"]
    assert verify(service.store, service.policy) == []


def test_the_pool_never_takes_a_slot_past_capacity_and_is_evicted_first(
    store: EventStore, clock: Clock
) -> None:
    service = make(store, clock, max_live=2, wait=SHORT, warm_pool={"data-app": 5})
    assert len(service.maintain_pools()) == 2
    assert len(live(service)) == 2
    clock.advance(seconds=10)
    # A turn of another kind needs a slot: a pooled sandbox is destroyed for it (it holds no work).
    with service.turn("c1", "ai-writeback"):
        pass
    expired = service.list(lc.EXPIRED)
    assert len(expired) == 1 and expired[0].expired_reason == "capacity"


def test_racing_turns_never_claim_one_pooled_sandbox_twice(store: EventStore, clock: Clock) -> None:
    service = make(store, clock, warm_pool={"data-app": 3})
    service.maintain_pools()
    pooled = set(live(service))
    racers = 8
    barrier = threading.Barrier(racers, timeout=30)

    def run(i: int) -> str:
        barrier.wait()
        with service.turn(f"conv-{i}", "data-app", keep_warm=True) as sbx:
            return sbx.id

    with ThreadPoolExecutor(racers) as pool:
        ids = list(pool.map(run, range(racers), timeout=120))
    service.pools.settle()
    assert len(set(ids)) == racers
    claims = [h for sid in pooled for h in service.history(sid) if h.type == "Claimed"]
    assert len(claims) == len({c.data["conversation_id"] for c in claims}) <= 3
    assert len(set(ids) & pooled) == len(claims)
    assert verify(service.store, service.policy) == []


def test_a_pooled_sandbox_is_recycled_after_an_idle_timeout(store: EventStore, clock: Clock) -> None:
    service = make(store, clock, warm_pool={"data-app": 1})
    service.maintain_pools()
    (old,) = live(service)
    clock.advance(minutes=31)
    report = service.maintain_pools()
    assert any("recycled" in line for line in report) and any("joined" in line for line in report)
    assert service.get(old).expired_reason == "pool_recycled"
    assert len(live(service)) == 1 and live(service) != [old]


def test_destroying_a_suspended_sandbox_is_never_refused_at_capacity(store: EventStore, clock: Clock) -> None:
    service = make(store, clock, max_live=1, wait=SHORT)
    with service.turn("c1", "data-app") as first:
        pass  # suspended on exit
    with service.turn("c2", "data-app"):
        # The fleet is full (c2 runs a turn): freeing c1's snapshot needs no slot.
        assert service.destroy(first.id).state == lc.EXPIRED
    assert verify(service.store, service.policy) == []
