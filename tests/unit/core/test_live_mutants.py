"""Rules of ``core/live.py`` that the 2026-12-08 mutation sample got past (docs/testing.md,
"Mutation scores, 2026-12-08"), on the fakes: no Docker, no sleep past a second."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import SandboxBusy
from sandbox_lifecycle.core.live import LiveCalls
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def _service() -> SandboxService:
    return SandboxService(InMemoryEventStore(), FakeProvider(), policy=POLICY, clock=Clock())


def test_a_sandbox_being_destroyed_is_busy_for_a_call_and_no_call_reaches_it() -> None:
    service = _service()
    sid = service.create("data-app").id
    state = service.kernel.load(sid)
    destroying = service.kernel.apply(state, sb.Destroy(actor="test", reason="user"))
    assert destroying.status == lc.DESTROYING and destroying.provider_ref is not None

    with pytest.raises(SandboxBusy) as busy:
        service.read_file(sid, "app/a.txt")
    assert (busy.value.sandbox_id, busy.value.state) == (sid, lc.DESTROYING)


def test_a_resume_in_flight_elsewhere_is_polled_with_backoff_then_reported_busy() -> None:
    service = _service()
    sid = service.create("data-app").id
    service.suspend(sid)
    state = service.kernel.load(sid)
    service.kernel.apply(state, sb.RequestResume(actor="other", reason="user"))  # never driven here
    loads = 0
    load_latest = service.kernel.load_latest

    def counted(sandbox_id: str) -> sb.Sandbox:
        nonlocal loads
        loads += 1
        return load_latest(sandbox_id)

    service.kernel.load_latest = counted  # type: ignore[method-assign]
    calls = LiveCalls(service.kernel, service._admission, busy_wait=timedelta(milliseconds=400))

    with pytest.raises(SandboxBusy, match="still in flight") as busy:
        calls.settled(sid)

    assert (busy.value.sandbox_id, busy.value.state) == (sid, lc.RESUMING)
    # 50, 100, 200 ms ... apart: a handful of reads in 0.4 s, not a busy loop.
    assert 1 <= loads <= 8
