"""Fixtures for the provider contract suite and the end-to-end service tests.

Each provider comes as a :class:`Harness`: the real adapter plus the few test-only knobs a contract needs
(make a snapshot vanish behind the provider's back, hand out collision-free sandbox ids, a second provider
of another deployment on the same engine, clean up).

Every provider a test builds gets a deployment name of its own, so it lists (and a service on it
reconciles) only what that test made, even on a Docker engine shared with other runs.

* ``fake``: ``tests.fakes.FakeProvider``, the double the service suite runs on, held to the same contract.
* ``e2b``: the real ``E2BProvider`` on the real e2b SDK, pointed at the loopback fake (one per test).
* ``docker``: the real ``DockerProvider`` on the local engine with a ``LocalSnapshotStore`` in tmp_path.
  Skipped, with the reason, when the engine or the local images are missing (scripts/test provides both).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core.ports import SandboxProvider, SnapshotInfo
from tests import session
from tests.conftest import DOCKER_IMAGES
from tests.e2b.conftest import API_KEY, fake_env
from tests.e2b.fake_e2b import FakeE2B
from tests.fakes import FakeEngine, FakeProvider

# Docker labels of the provider, repeated here so cleanup does not go through the code under test.
LABEL_ID = "sandbox-lifecycle.id"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"

# The provider axis of every parametrized test; docker tests carry the docker marker so `-m "not docker"`
# deselects them.
PROVIDER_PARAMS = ["e2b", pytest.param("docker", marks=pytest.mark.docker)]


def new_sandbox_id() -> str:
    # `ct` + uuid hex: never collides with another run, and a stray container is recognisable as ours.
    return "ct" + uuid.uuid4().hex[:14]


def new_deployment() -> str:
    return session.new_deployment()


@dataclass
class Harness:
    name: str
    # A provider of the given deployment; all of them share one engine (or fake) and snapshot store.
    make: Callable[[str], SandboxProvider]
    # Remove a suspended workspace of `provider` behind its back (E2B lost the paused sandbox; someone
    # deleted the archive from the snapshot directory).
    lose: Callable[[SnapshotInfo], None]
    deployment: str
    # Every deployment a test used; the fixture's finalizer removes whatever the providers still hold.
    deployments: list[str] = field(default_factory=list)
    provider: SandboxProvider = field(init=False)

    def __post_init__(self) -> None:
        self.provider = self.other(self.deployment)

    def other(self, deployment: str | None = None) -> SandboxProvider:
        """A provider of another deployment (a fresh one unless named) on the same engine and store."""
        self.deployments.append(deployment or new_deployment())
        return self.make(self.deployments[-1])

    @staticmethod
    def new_id() -> str:
        return new_sandbox_id()


# ------------------------------------------------------------------------------------------------ e2b


@pytest.fixture
def e2b_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads E2B_* variables of the process; none of them may steer an offline test to the cloud."""
    for name in ("E2B_DEBUG", "E2B_HTTP_VERSION", "E2B_DOMAIN", "E2B_API_URL", "E2B_SANDBOX_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_e2b(tmp_path: Path, e2b_env: None) -> Iterator[FakeE2B]:
    fake = FakeE2B(API_KEY, tmp_path / "e2b")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def e2b_provider(fake: FakeE2B, deployment: str) -> E2BProvider:
    # Short backoff keeps retried calls fast; everything else is the production configuration.
    settings = dataclasses.replace(
        E2BSettings.from_env(fake_env(fake)), retry_base_delay=0.01, retry_max_delay=0.05, request_timeout=5.0
    )
    return E2BProvider(settings, deployment=deployment)


# --------------------------------------------------------------------------------------------- docker


@pytest.fixture(scope="session")
def docker_client(docker_engine: Any) -> Any:
    return docker_engine


def remove_docker_sandboxes(
    client: Any, *, sandbox_ids: Sequence[str] = (), deployments: Sequence[str] = ()
) -> None:
    """Remove every container and home volume labelled with one of these sandbox ids or deployments."""
    labels = [f"{LABEL_ID}={s}" for s in sandbox_ids] + [f"{LABEL_DEPLOYMENT}={d}" for d in deployments]
    disks: list[tuple[str, str]] = []
    for label in labels:
        for container in client.containers.list(all=True, filters={"label": label}):
            disks.append((container.labels.get(LABEL_DEPLOYMENT, ""), container.labels.get(LABEL_ID, "")))
            container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"label": label}):
            volume.remove(force=True)
    # The disk images of the home filesystems and the egress state are host files, not engine objects.
    from tests.docker.conftest import DEFAULT_EGRESS_DIR, release_disks, remove_network_leftovers

    for label in labels:
        remove_network_leftovers(client, label)
    for deployment in deployments:
        release_disks(deployment)
        shutil.rmtree(os.path.join(DEFAULT_EGRESS_DIR, deployment), ignore_errors=True)
    for deployment, sandbox_id in disks:
        if deployment and sandbox_id:
            release_disks(deployment, sandbox_id)
    # The egress container of a deployment whose sandboxes were named one by one (the CLI's).
    for deployment in {d for d, _ in disks if d} - set(deployments):
        remove_network_leftovers(client, f"{LABEL_DEPLOYMENT}={deployment}")
        shutil.rmtree(os.path.join(DEFAULT_EGRESS_DIR, deployment), ignore_errors=True)


def docker_provider(client: Any, snapshot_dir: Path, deployment: str) -> SandboxProvider:
    from sandbox_lifecycle.adapters.providers.docker.provider import DockerLimits, DockerProvider
    from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore

    # A small memory cap: this machine has two cores and runs other suites next to this one.
    limits = DockerLimits(memory_bytes=512 * 1024**2, pids=256)
    return DockerProvider(
        DOCKER_IMAGES,
        LocalSnapshotStore(snapshot_dir),
        client=client,
        environ={},
        limits=limits,
        deployment=deployment,
    )


def unlink_snapshot(snapshot_dir: Path, deployment: str) -> Callable[[SnapshotInfo], None]:
    def lose(snapshot: SnapshotInfo) -> None:
        # The provider keeps each deployment's archives under a directory of that name.
        (snapshot_dir / deployment / snapshot.key).unlink()

    return lose


# ------------------------------------------------------------------------------------------- harness


def fake_lose(engine: FakeEngine, deployment: str) -> Callable[[SnapshotInfo], None]:
    def lose(snapshot: SnapshotInfo) -> None:
        # The stored workspace goes; the provider still believes it has it.
        (provider,) = [p for p in engine.providers if p.deployment == deployment]
        shutil.rmtree(provider.snapshots[snapshot.key])

    return lose


# The contract runs on the test double too, so the service suite that runs on it cannot drift.
HARNESS_PARAMS = ["fake", *PROVIDER_PARAMS]


@pytest.fixture(params=HARNESS_PARAMS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    deployment = new_deployment()
    if request.param == "fake":
        engine = FakeEngine(tmp_path / "fake-engine")
        yield Harness(
            "fake", lambda d: FakeProvider(engine, deployment=d), fake_lose(engine, deployment), deployment
        )
        return
    if request.param == "e2b":
        fake: FakeE2B = request.getfixturevalue("fake_e2b")
        # Stopping the fake (its fixture) kills every process of every sandbox; nothing outlives the test.
        yield Harness("e2b", lambda d: e2b_provider(fake, d), lambda snap: fake.lose(snap.key), deployment)
        return
    client = request.getfixturevalue("docker_client")
    snapshot_dir = tmp_path / "snapshots"
    h = Harness(
        "docker",
        lambda d: docker_provider(client, snapshot_dir, d),
        unlink_snapshot(snapshot_dir, deployment),
        deployment,
    )
    try:
        yield h
    finally:
        remove_docker_sandboxes(client, deployments=h.deployments)


def deployment_of_env(env: dict[str, str]) -> str:
    """The deployment a CLI or service run with this environment labels its objects with (its egress
    container and networks included, which outlive the sandboxes a test names one by one)."""
    from sandbox_lifecycle.adapters.composition.settings import Settings

    return Settings.from_env(env).deployment
