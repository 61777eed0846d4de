"""Eviction for capacity never takes a sandbox with a call in flight (issue N, item 4).

An exec, a file call or a wait on a background process holds a lease on its sandbox (core/inflight.py):
the eviction's suspend is refused by the store while an unexpired lease exists, so the call is never
killed; the caller short of room waits, then gets CapacityExceeded. On the fake provider and every
event store; the Docker and PostgreSQL version through `sandboxctl exec` is test_busy_eviction_docker.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import CapacityExceeded
from sandbox_lifecycle.core.ports import EventStore, ExecResult, SnapshotInfo
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService, utcnow
from tests.support.fakes import Clock, FakeProvider

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


class Watched(FakeProvider):
    """The fake provider, noting every suspend of a sandbox while one of its calls runs (a kill).

    ``gate``: an exec of ``["block"]`` waits for it instead of running anything."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.killed: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def exec(self, ref: str, command: Sequence[str], **kwargs: Any) -> ExecResult:
        sid = self._inst(ref).sandbox_id
        with self._lock:
            self.running[sid] += 1
        try:
            if list(command) == ["block"]:
                self.entered.set()
                assert self.gate.wait(30)
                command = ["true"]
            return super().exec(ref, command, **kwargs)
        finally:
            with self._lock:
                self.running[sid] -= 1

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        sid = self._inst(ref).sandbox_id
        with self._lock:
            self.running[sid] += 1
        try:
            self.entered.set()
            assert self.gate.wait(30)
            super().write_files(ref, files)
        finally:
            with self._lock:
                self.running[sid] -= 1

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        with self._lock:
            if self.running[sandbox_id]:
                self.killed.append(sandbox_id)
        return super().suspend(sandbox_id, ref, kind, snapshot_key)


def settled_pair(
    store: EventStore, clock: Clock, wait: timedelta
) -> tuple[SandboxService, Watched, str, str]:
    """Max one live: ``busy`` idle and live for a minute, ``other`` suspended."""
    provider = Watched()
    service = SandboxService(
        store, provider, policy=POLICY, clock=clock, capacity=Capacity(max_live=1, wait=wait)
    )
    other = service.create("data-app").id
    service.suspend(other)
    busy = service.create("data-app").id
    clock.advance(minutes=1)
    return service, provider, busy, other


@pytest.mark.parametrize("call", ["exec", "write_files"])
def test_a_sandbox_with_a_call_in_flight_is_not_evicted(store: EventStore, call: str) -> None:
    clock = Clock()
    service, provider, busy, other = settled_pair(store, clock, timedelta(milliseconds=300))
    with ThreadPoolExecutor(1) as pool:
        if call == "exec":
            running = pool.submit(service.exec, busy, ["block"])
        else:
            running = pool.submit(service.write_files, busy, {"a.txt": b"a"})
        try:
            assert provider.entered.wait(10)
            # The fleet is full and its one live sandbox is idle in the log, but busy: no room, a refusal.
            with pytest.raises(CapacityExceeded):
                service.exec(other, ["true"])
            assert service.get(busy).state == lc.IDLE
        finally:
            provider.gate.set()
        running.result(10)
    assert provider.killed == []
    # Once the call is over the sandbox is idle and free again: the next caller gets it.
    assert service.exec(other, ["true"]).exit_code == 0
    assert service.get(busy).state == lc.SUSPENDED
    assert ("SuspendRequested", "capacity") in [(h.type, h.reason) for h in service.history(busy)]
    assert store.leased_sandboxes(clock()) == set()
    assert verify(service.store, service.policy) == []


def test_a_waiter_gets_the_sandbox_once_its_call_ends(store: EventStore) -> None:
    clock = Clock()
    service, provider, busy, other = settled_pair(store, clock, timedelta(seconds=20))
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(service.exec, busy, ["block"])
        assert provider.entered.wait(10)
        waiting = pool.submit(service.exec, other, ["true"])
        threading.Timer(0.3, provider.gate.set).start()
        assert waiting.result(20).exit_code == 0
        assert running.result(20).exit_code == 0
    assert provider.killed == []
    assert service.get(other).state == lc.IDLE and service.get(busy).state == lc.SUSPENDED


@pytest.mark.slow
def test_concurrent_execs_at_max_live_are_never_killed(store: EventStore) -> None:
    """The report's scenario on the fakes: 6 sandboxes, 2 slots, 6 execs outlasting the fresh second."""
    provider = Watched()
    service = SandboxService(
        store,
        provider,
        policy=POLICY,
        clock=utcnow,
        capacity=Capacity(max_live=2, wait=timedelta(seconds=60)),
    )
    ids = []
    for _ in range(6):
        sid = service.create("data-app").id
        service.suspend(sid)
        ids.append(sid)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda sid: service.exec(sid, ["sh", "-c", "sleep 1.3; echo done"]), ids))
    assert provider.killed == []
    assert [(r.exit_code, r.stdout) for r in results] == [(0, "done\n")] * 6
    assert len([r for r in service.list() if lc.holds_compute(r.state, r.provider_ref)]) <= 2
    assert verify(service.store, service.policy) == []
