"""Rules of ``core/kernel.py`` that the 2026-12-08 mutation sample got past (docs/testing.md,
"Mutation scores, 2026-12-08"), on the fakes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import ConcurrencyError, SandboxBusy
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.records import AppendResult, NewEvent
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


class _Store(InMemoryEventStore):
    """Keeps what each append carried; loses every race while ``contended`` is set."""

    contended = False

    def __init__(self) -> None:
        super().__init__()
        self.appended: list[NewEvent] = []

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent], **kwargs: Any
    ) -> AppendResult:
        if self.contended:
            raise ConcurrencyError(stream_id, expected_version, "a racer appended first")
        self.appended.extend(events)
        return super().append(stream_id, expected_version, events, **kwargs)


def _service(store: _Store) -> SandboxService:
    return SandboxService(store, FakeProvider(), policy=POLICY, clock=Clock())


def test_a_run_that_loses_every_race_reports_the_sandbox_contended() -> None:
    store = _Store()
    service = _service(store)
    sid = service.create("data-app").id
    store.contended = True

    with pytest.raises(SandboxBusy) as busy:
        service.kernel.run(sid, lambda s: sb.RequestSuspend(actor="t", reason="user"))
    assert (busy.value.sandbox_id, busy.value.state) == (sid, "contended")


def test_the_correlation_id_is_in_each_events_metadata_and_absent_when_none_was_given() -> None:
    store = _Store()
    service = _service(store)
    sid = service.create("data-app").id
    store.appended.clear()

    service.kernel.run(sid, lambda s: sb.RequestSuspend(actor="t", reason="user"), "corr-1")
    assert store.appended and all(e.metadata.get("correlation_id") == "corr-1" for e in store.appended)

    other = service.create("data-app").id
    store.appended.clear()
    service.kernel.apply(service.kernel.load(other), sb.Destroy(actor="t", reason="user"))
    assert store.appended and all("correlation_id" not in e.metadata for e in store.appended)
