"""SANDBOX_MAX_LIFETIME_MS on the real Docker engine, on a fake clock: a sandbox busy to the end is
warned of, then destroyed at its age, container and snapshot gone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import Clock
from tests.support.fixtures.providers import docker_provider, new_deployment, remove_docker_sandboxes

pytestmark = pytest.mark.docker

LIFETIME = timedelta(hours=1)
POLICY = Policy(
    idle_timeout=timedelta(minutes=30),
    lease=timedelta(minutes=10),
    max_lifetime=LIFETIME,
    warning_lead=timedelta(minutes=1),
)


@pytest.fixture
def service(docker_client: Any, clean_sqlite_url: str, tmp_path: Path) -> Iterator[SandboxService]:
    deployment = new_deployment()
    store = open_store(clean_sqlite_url)
    provider = docker_provider(docker_client, tmp_path / "snapshots", deployment)
    try:
        yield SandboxService(store, provider, policy=POLICY, clock=Clock())
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])
        store.close()


def test_a_busy_sandbox_and_a_suspended_one_are_destroyed_at_their_max_lifetime(
    service: SandboxService,
) -> None:
    clock = service.clock
    assert isinstance(clock, Clock)
    start = clock.now
    busy = service.create(DATA_APP, "busy").id
    resting = service.create(DATA_APP, "resting").id
    service.suspend(resting)
    clock.now = start + LIFETIME - timedelta(minutes=1)
    service.exec(busy, ["true"])  # activity to the last minute
    report = service.fire_due()
    assert sorted(report.warned) == sorted([f"{busy}:max_lifetime", f"{resting}:max_lifetime"])
    clock.now = start + LIFETIME
    service.fire_due()
    for sid in (busy, resting):
        row = service.get(sid)
        assert (row.state, row.expired_reason) == (lc.EXPIRED, "max_lifetime")
        assert service.provider.instance(sid) is None
    assert [s for s, _ in service.provider.list_snapshots() if s in (busy, resting)] == []
