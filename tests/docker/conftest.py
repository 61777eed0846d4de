"""Fixtures for the Docker provider tests: the real engine and the locally built images.

`scripts/start-docker.sh` starts the engine and builds the images; without an engine these tests skip.
Every container a test creates carries this run's id prefix and is removed by label when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import (
    LABEL_ID,
    LABEL_MANAGED,
    DockerLimits,
    DockerProvider,
)
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from tests import session
from tests.conftest import DOCKER_IMAGES

# Small enough that the truncation test streams only a few MiB.
TEST_LIMITS = DockerLimits(memory_bytes=512 * 1024**2, pids=256, max_output_bytes=64 * 1024)
# Sandbox ids of this pytest run start with it, so cleanup never touches anyone else's containers.
RUN_PREFIX = f"{session.PREFIX}d{uuid.uuid4().hex[:4]}"
# The provider's deployment in this run: its listings hold only this run's containers and snapshots.
DEPLOYMENT = RUN_PREFIX
# The deployment of the network tests, whose egress container has a state directory of its own.
NET_DEPLOYMENT = f"{RUN_PREFIX}-net"
# The provider's default disk and egress state directories, repeated so that cleanup does not go through
# the code under test.
DEFAULT_DISK_DIR = "/var/lib/sandbox-lifecycle/disks"
DEFAULT_EGRESS_DIR = "/var/lib/sandbox-lifecycle/egress"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
LABEL_ROLE = "sandbox-lifecycle.role"


@pytest.fixture(scope="session")
def docker_client(docker_engine: docker.DockerClient) -> Iterator[docker.DockerClient]:
    client = docker_engine
    yield client
    _remove_run_leftovers(client)


def _remove_run_leftovers(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=1"}):
        if container.labels.get(LABEL_ID, "").startswith(RUN_PREFIX):
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"label": LABEL_ID}):
        if (volume.attrs.get("Labels") or {}).get(LABEL_ID, "").startswith(RUN_PREFIX):
            volume.remove(force=True)
    for deployment in (DEPLOYMENT, f"{DEPLOYMENT}-b", NET_DEPLOYMENT):
        remove_network_leftovers(client, f"{LABEL_DEPLOYMENT}={deployment}")
        shutil.rmtree(os.path.join(DEFAULT_EGRESS_DIR, deployment), ignore_errors=True)
        release_disks(deployment)


def remove_network_leftovers(client: docker.DockerClient, label: str) -> None:
    """Remove the egress containers, port forwarders and sandbox networks carrying ``label``."""
    for container in client.containers.list(all=True, filters={"label": [label, LABEL_ROLE]}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": [label, LABEL_ROLE]}):
        # The deployment's egress container may still be attached (it is removed by deployment only).
        for member in client.api.inspect_network(network.id).get("Containers") or {}:
            with contextlib.suppress(docker.errors.APIError):
                client.api.disconnect_container_from_network(member, network.id, force=True)
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()


def disk_files(deployment: str, sandbox_id: str = "") -> list[str]:
    """The disk images of a deployment's sandboxes (of one sandbox, when given) left on the host."""
    folder = os.path.join(DEFAULT_DISK_DIR, deployment)
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(sandbox_id) and n.endswith(".img")
    )


def loop_devices_of(image: str) -> list[str]:
    done = subprocess.run(
        ["losetup", "--noheadings", "--output", "NAME", "-j", image],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.split()


def release_disks(deployment: str, sandbox_id: str = "") -> None:
    """Detach and delete disks a test left (a container removed behind the provider's back keeps its own)."""
    folder = os.path.join(DEFAULT_DISK_DIR, deployment)
    for image in disk_files(deployment, sandbox_id):
        for device in loop_devices_of(image):
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        for path in (image, image.removesuffix(".img") + ".dev"):
            if os.path.lexists(path):
                os.unlink(path)
    if os.path.isdir(folder) and not os.listdir(folder):
        with contextlib.suppress(OSError):  # a provider of that deployment may be making a disk right now
            os.rmdir(folder)


@pytest.fixture
def store(tmp_path: Path) -> LocalSnapshotStore:
    return LocalSnapshotStore(tmp_path / "snapshots")


@pytest.fixture
def provider(docker_client: docker.DockerClient, store: LocalSnapshotStore) -> DockerProvider:
    """The provider as the service builds it: no client handed in, so its exec and inspect calls go
    through the stdlib engine client (the provider contract suite hands one in: the SDK path)."""
    return DockerProvider(DOCKER_IMAGES, store, environ={}, limits=TEST_LIMITS, deployment=DEPLOYMENT)


@pytest.fixture(params=["engine", "sdk"])
def either_provider(
    request: pytest.FixtureRequest, docker_client: docker.DockerClient, store: LocalSnapshotStore
) -> DockerProvider:
    """The provider on each exec transport: the stdlib engine client, and the SDK (a client handed in)."""
    client = docker_client if request.param == "sdk" else None
    return DockerProvider(
        DOCKER_IMAGES, store, client=client, environ={}, limits=TEST_LIMITS, deployment=DEPLOYMENT
    )


@pytest.fixture
def new_id(docker_client: docker.DockerClient) -> Iterator[Callable[[], str]]:
    """Hands out fresh sandbox ids; removes every container and volume carrying one afterwards."""
    issued: list[str] = []

    def make() -> str:
        issued.append(f"{RUN_PREFIX}-{uuid.uuid4().hex[:10]}")
        return issued[-1]

    yield make
    for sandbox_id in issued:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_ID}={sandbox_id}"}
        ):
            container.remove(force=True, v=True)
        for volume in docker_client.volumes.list(filters={"label": f"{LABEL_ID}={sandbox_id}"}):
            # The engine may still be removing it with its container.
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
        remove_network_leftovers(docker_client, f"{LABEL_ID}={sandbox_id}")
        release_disks(DEPLOYMENT, sandbox_id)
