"""The rules of eviction, of the warm pool and of calls in flight that one-line mutants got past (issue N,
"Tests that would have caught these"), on the fakes: no Docker, no sleeps longer than a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta

import pytest

from sandbox_lifecycle.core import inflight
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import CapacityExceeded
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService, utcnow
from sandbox_lifecycle.events.records import SandboxRow
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))
SHORT = timedelta(milliseconds=200)


def make(
    clock: Callable[[], datetime],
    policy: Policy = POLICY,
    store: InMemoryEventStore | None = None,
    **cap: object,
) -> SandboxService:
    return SandboxService(
        store or InMemoryEventStore(),
        FakeProvider(),
        policy=policy,
        clock=clock,
        capacity=Capacity(**cap),  # type: ignore[arg-type]
    )


def types_and_reasons(service: SandboxService, sid: str) -> list[tuple[str, str]]:
    return [(h.type, h.reason) for h in service.history(sid)]


# ------------------------------------------------------------------------------------------ eviction


def test_a_sandbox_idle_for_under_a_second_is_not_evicted_and_at_a_second_it_is() -> None:
    clock = Clock()
    service = make(clock, max_live=1, wait=SHORT)
    other = service.create("data-app").id
    service.suspend(other)
    fresh = service.create("data-app").id

    clock.advance(seconds=0.999)
    with pytest.raises(CapacityExceeded):
        service.resume(other)
    assert service.get(fresh).state == lc.IDLE

    clock.advance(seconds=0.001)
    assert service.resume(other).state == lc.IDLE
    assert ("SuspendRequested", "capacity") in types_and_reasons(service, fresh)


class _Hooked(InMemoryEventStore):
    """Runs ``after_idle_listing`` once, right after the first listing of idle sandboxes."""

    after_idle_listing: Callable[[], None] | None = None

    def list_sandboxes(self, state: str | None = None) -> list[SandboxRow]:
        rows = super().list_sandboxes(state)
        hook, self.after_idle_listing = self.after_idle_listing, None
        if state == lc.IDLE and hook is not None:
            hook()
        return rows


def test_a_sandbox_that_started_a_turn_between_listing_and_load_is_not_evicted() -> None:
    clock = Clock()
    store = _Hooked()
    service = make(clock, store=store, max_live=1, wait=SHORT)
    other = service.create("data-app").id
    service.suspend(other)
    with service.turn("c1", "data-app", keep_warm=True) as sbx:
        pass
    clock.advance(minutes=1)
    with ExitStack() as turns:
        # The evictor lists it idle; before it loads it, the conversation's next turn starts on it.
        store.after_idle_listing = lambda: turns.enter_context(service.turn("c1", "data-app"))
        with pytest.raises(CapacityExceeded):
            service.resume(other)
        assert service.get(sbx.id).state == lc.RUNNING
    assert ("SuspendRequested", "capacity") not in types_and_reasons(service, sbx.id)


def test_a_lease_left_by_a_crashed_holder_stops_protecting_once_expired() -> None:
    clock = Clock()
    service = make(clock, max_live=1, wait=SHORT)
    other = service.create("data-app").id
    service.suspend(other)
    busy = service.create("data-app").id
    clock.advance(minutes=1)
    # A holder that died mid-call: its lease is never renewed nor released.
    service.store.take_lease("dead", busy, "gone:1", clock(), clock() + inflight.LEASE_TTL)
    with pytest.raises(CapacityExceeded):
        service.resume(other)
    clock.advance(seconds=inflight.LEASE_TTL.total_seconds())
    assert service.resume(other).state == lc.IDLE
    assert service.get(busy).state == lc.SUSPENDED


def test_an_eviction_records_the_background_processes_it_stops() -> None:
    clock = Clock()
    service = make(clock, max_live=1, wait=SHORT)
    other = service.create("data-app").id
    service.suspend(other)
    busy = service.create("data-app").id
    proc = service.start(busy, ["sleep", "30"])
    clock.advance(minutes=1)
    service.resume(other)
    suspended = [h for h in service.history(busy) if h.type == "SuspendRequested"]
    assert suspended and suspended[-1].reason == "capacity"
    recorded = service.load(busy).stopped_processes
    assert [r["id"] for r in recorded] == [proc.id]


def test_no_lease_is_taken_without_a_capacity_limit() -> None:
    store = InMemoryEventStore()
    taken: list[str] = []
    take = store.take_lease
    store.take_lease = lambda lid, sid, *a: (taken.append(sid), take(lid, sid, *a))[1]  # type: ignore[method-assign]
    unbounded = make(Clock(), store=store)
    sid = unbounded.create("data-app").id
    unbounded.exec(sid, ["true"])
    assert taken == []
    bounded = SandboxService(
        store, unbounded.provider, policy=POLICY, clock=Clock(), capacity=Capacity(max_live=5)
    )
    bounded.exec(sid, ["true"])
    assert taken == [sid] and store.leases == {}  # taken for the call, dropped after it


def test_a_lease_is_renewed_while_a_call_outlives_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inflight, "LEASE_TTL", timedelta(seconds=0.3))
    service = make(utcnow, max_live=2)
    sid = service.create("data-app").id
    seen: list[set[str]] = []

    def watch(_ref: str) -> None:
        for _ in range(4):
            time.sleep(0.25)
            seen.append(service.store.leased_sandboxes(utcnow()))

    service._on_live(sid, watch, busy_for=10)
    # 1 s of call against a 0.3 s lease: valid all along, renewed every 0.1 s.
    assert seen == [{sid}] * 4
    assert service.store.leased_sandboxes(utcnow()) == set()


# ------------------------------------------------------------------------------------------ the pool


def test_an_idle_sandbox_without_conversation_that_never_joined_a_pool_is_neither_drained_nor_claimed() -> (
    None
):
    clock = Clock()
    service = make(clock, warm_pool={"data-app": 0})
    plain = service.create("data-app").id  # idle, no conversation, not pooled
    clock.advance(hours=1)  # older than an idle timeout too: not recycled either

    assert service.maintain_pools() == []
    assert service.get(plain).state == lc.IDLE

    service.capacity = Capacity(warm_pool={"data-app": 1})
    with service.turn("conv-a", "data-app") as sbx:
        assert sbx.id != plain
    service.pools.settle()
    assert service.get(plain).conversation_id is None
    assert "Claimed" not in [h.type for h in service.history(plain)]
    assert service.get(plain).state == lc.IDLE


# ------------------------------------------------------------------------------ heartbeat and window


@pytest.mark.parametrize(
    ("idle", "interval", "window"),
    [
        (timedelta(minutes=30), 600.0, timedelta(seconds=60)),
        (timedelta(minutes=5), 100.0, timedelta(seconds=30)),
        (timedelta(seconds=3), 1.0, timedelta(milliseconds=300)),
        (timedelta(seconds=1), 0.5, timedelta(milliseconds=100)),
    ],
)
def test_heartbeat_interval_and_activity_window(idle: timedelta, interval: float, window: timedelta) -> None:
    policy = Policy(idle_timeout=idle, retention=timedelta(days=7), lease=timedelta(minutes=10))
    service = make(Clock(), policy)
    assert service.heartbeat_interval == pytest.approx(interval)
    assert policy.activity_window == window


def _beats(service: SandboxService, sid: str) -> int:
    return sum(1 for h in service.history(sid) if h.reason == inflight.HEARTBEAT_REASON)


FAST = Policy(idle_timeout=timedelta(seconds=1.5), retention=timedelta(days=7), lease=timedelta(minutes=10))


def test_an_exec_in_flight_beats_every_interval_and_stops_when_it_returns() -> None:
    service = make(utcnow, FAST)  # interval 0.5 s, window 0.15 s
    sid = service.create("data-app").id
    service.exec(sid, ["sleep", "1.3"])
    beats = _beats(service, sid)
    assert 1 <= beats <= 2  # at 0.5 s and 1.0 s
    time.sleep(0.8)
    assert _beats(service, sid) == beats


def test_a_heartbeat_stops_recording_at_its_bound() -> None:
    service = make(utcnow, FAST)
    sid = service.create("data-app").id
    with inflight.heartbeat(service.kernel, sid, bound=1.2):
        time.sleep(3.0)  # unbounded, this would be five or six beats
    assert 1 <= _beats(service, sid) <= 2
