"""Fixtures for the gvisor provider's tests: the Docker engine, which must have the ``runsc`` runtime.

The machine's long-lived engine has none, so there these tests skip, saying so; the fresh engine of
scripts/test (scripts/fresh-engine.sh) registers it, and there they run. The ``harness`` here is the
provider contract's (tests/providers/conftest.py) with the gvisor provider alone, so the contract suites
collected in this folder run on it exactly as they run on docker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerLimits
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
from sandbox_lifecycle.adapters.providers.gvisor.runtime import RUNTIME, runtime_status
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from tests.conftest import DOCKER_IMAGES

# The egress suite's servers on the engine's bridge address and its allow-list, for this folder's tests.
from tests.integration.adapters.providers.docker.test_egress import (  # noqa: F401
    allowed_port,
    bridge_address,
    egress_settings,
    other_port,
)
from tests.support.fixtures.providers import Harness, new_deployment, remove_docker_sandboxes, unlink_snapshot

# The Docker contract's limits: this machine has two cores and runs other suites beside this one.
LIMITS = DockerLimits(memory_bytes=512 * 1024**2, pids=256)


@pytest.fixture(scope="session")
def docker_client(docker_engine: docker.DockerClient) -> docker.DockerClient:
    """The engine, once it is known to have runsc (a skip naming what to do when it has not)."""
    if not runtime_status(docker_engine).present:
        pytest.skip(
            f"the Docker engine has no {RUNTIME!r} runtime: scripts/test runs these on a fresh engine "
            "that registers it (scripts/fresh-engine.sh)"
        )
    return docker_engine


def gvisor_provider(
    client: docker.DockerClient,
    snapshot_dir: Path,
    deployment: str,
    egress: EgressSettings | None = None,
    disk_limit_mb: int = 10240,
) -> GVisorProvider:
    return GVisorProvider(
        DOCKER_IMAGES,
        LocalSnapshotStore(snapshot_dir),
        client=client,
        limits=LIMITS,
        deployment=deployment,
        egress=egress,
        disk_limit_mb=disk_limit_mb,
    )


@pytest.fixture(params=[pytest.param("gvisor", marks=pytest.mark.docker)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    client = request.getfixturevalue("docker_client")
    deployment = new_deployment()
    snapshot_dir = tmp_path / "snapshots"
    h = Harness(
        "gvisor",
        lambda d: gvisor_provider(client, snapshot_dir, d),
        unlink_snapshot(snapshot_dir, deployment),
        deployment,
    )
    try:
        yield h
    finally:
        remove_docker_sandboxes(client, deployments=h.deployments)
