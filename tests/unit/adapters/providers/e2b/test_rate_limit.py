"""E2B's own concurrency limit (429 on create) is CapacityExceeded, after bounded retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.providers.e2b import provider as e2b_module
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.errors import CapacityExceeded
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.e2b import API_KEY
from tests.support.fixtures.providers import e2b_provider


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeE2B]:
    server = FakeE2B(API_KEY, tmp_path / "e2b")
    server.start()
    yield server
    server.stop()


def test_a_create_past_e2bs_limit_is_retried_then_capacity_exceeded(
    fake: FakeE2B, clean_sqlite_url: str
) -> None:
    fake.max_running = 1
    service = SandboxService(open_store(clean_sqlite_url), e2b_provider(fake, "cap429"))
    first = service.create("data-app", "c1")

    with pytest.raises(CapacityExceeded, match="provider refused") as info:
        service.create("data-app", "c2")

    assert info.value.limit is None
    creates = fake.requests("POST", "/v2/sandboxes")
    assert len(creates) == 1 + 1 + e2b_module.RATE_LIMIT_RETRIES
    # The refused sandbox's record ends expired with the reason in its history; nothing is left behind.
    (refused,) = [r for r in service.list() if r.id != first.id]
    assert refused.state == lc.EXPIRED
    assert [h.type for h in service.history(refused.id)] == ["CreationRequested", "CreationFailed"]
    assert len(fake.sandboxes()) == 1
    assert verify(service.store, service.policy) == []


def test_a_slot_freed_during_the_retries_is_taken(fake: FakeE2B, clean_sqlite_url: str) -> None:
    fake.max_running = 1
    service = SandboxService(open_store(clean_sqlite_url), e2b_provider(fake, "cap429b"))
    first = service.create("data-app", "c1")
    # The first one pauses while the second create is being retried: the retry gets the slot.
    threading.Timer(0.15, lambda: service.suspend(first.id)).start()
    second = service.create("data-app", "c2")
    assert second.state == lc.IDLE
