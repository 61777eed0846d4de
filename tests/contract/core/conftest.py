"""The fixtures of this folder's tests: the service suites run on the in-memory store and on both real
event stores (SQLite, PostgreSQL), over the fake provider unless a module brings its own; and the provider
harnesses, from tests.support.fixtures.providers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore
from tests.support.fixtures.providers import docker_client, e2b_env, fake_e2b, harness  # noqa: F401

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    url = request.getfixturevalue("clean_sqlite_url" if request.param == "sqlite" else "clean_pg_url")
    real = open_store(url)
    yield real
    real.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def service(store: EventStore, provider: FakeProvider, clock: Clock) -> SandboxService:
    return SandboxService(store, provider, policy=POLICY, clock=clock)
