"""Fixtures for the provider contract suite and the end-to-end service tests.

Each provider comes as a :class:`Harness`: the real adapter plus the few test-only knobs a contract needs
(make a snapshot vanish behind the provider's back, hand out collision-free sandbox ids, clean up).

* ``e2b``: the real ``E2BProvider`` on the real e2b SDK, pointed at the loopback fake (one per test).
* ``docker``: the real ``DockerProvider`` on the local engine with a ``LocalSnapshotStore`` in tmp_path.
  Skipped, with the reason, when the engine or the local images are missing (scripts/test provides both).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.e2b_provider import E2BProvider, E2BSettings
from core.kinds import AI_WRITEBACK, DATA_APP
from core.ports import ProviderInstance, SandboxProvider, SnapshotInfo
from tests.e2b.conftest import API_KEY, fake_env
from tests.e2b.fake_e2b import FakeE2B

IMAGES = {
    DATA_APP: os.environ.get("SANDBOX_DOCKER_IMAGE", "lightdash-sandbox:local"),
    AI_WRITEBACK: os.environ.get("SANDBOX_AI_WRITEBACK_DOCKER_IMAGE", "lightdash-ai-writeback:local"),
}
# Docker labels of the provider, repeated here so cleanup does not go through the code under test.
LABEL_ID = "sandbox-lifecycle.id"

# The provider axis of every parametrized test; docker tests carry the docker marker so `-m "not docker"`
# deselects them.
PROVIDER_PARAMS = ["e2b", pytest.param("docker", marks=pytest.mark.docker)]


def new_sandbox_id() -> str:
    # `ct` + uuid hex: never collides with another run, and a stray container is recognisable as ours.
    return "ct" + uuid.uuid4().hex[:14]


@dataclass
class Harness:
    name: str
    provider: SandboxProvider
    # Remove a suspended workspace behind the provider's back (E2B lost the paused sandbox; someone
    # deleted the archive from the snapshot directory).
    lose: Callable[[SnapshotInfo], None]
    # Every sandbox id a test used; the fixture's finalizer removes whatever the provider still holds.
    issued: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        self.issued.append(new_sandbox_id())
        return self.issued[-1]


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


def e2b_provider(fake: FakeE2B) -> E2BProvider:
    # Short backoff keeps retried calls fast; everything else is the production configuration.
    settings = dataclasses.replace(
        E2BSettings.from_env(fake_env(fake)), retry_base_delay=0.01, retry_max_delay=0.05, request_timeout=5.0
    )
    return E2BProvider(settings)


# --------------------------------------------------------------------------------------------- docker


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The local engine with both images, or a skip that says what to run."""
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"Docker engine unreachable ({exc}); `sudo scripts/start-docker.sh` starts it")
    missing = []
    for kind, image in IMAGES.items():
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(f"{image} ({kind})")
    if missing:
        client.close()
        pytest.skip(
            f"Docker images missing: {', '.join(missing)}; `sudo scripts/start-docker.sh` builds them"
        )
    yield client
    client.close()


def remove_docker_sandboxes(client: Any, sandbox_ids: list[str]) -> None:
    """Remove every container and home volume labelled with one of these ids (bounded by the list)."""
    for sandbox_id in sandbox_ids:
        for container in client.containers.list(all=True, filters={"label": f"{LABEL_ID}={sandbox_id}"}):
            container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"label": f"{LABEL_ID}={sandbox_id}"}):
            volume.remove(force=True)


def docker_provider(client: Any, snapshot_dir: Path) -> SandboxProvider:
    from adapters.docker_provider import DockerLimits, DockerProvider
    from adapters.localfs import LocalSnapshotStore

    # A small memory cap: this machine has two cores and runs other suites next to this one.
    limits = DockerLimits(memory_bytes=512 * 1024**2, pids=256)
    return DockerProvider(IMAGES, LocalSnapshotStore(snapshot_dir), client=client, environ={}, limits=limits)


def unlink_snapshot(snapshot_dir: Path) -> Callable[[SnapshotInfo], None]:
    def lose(snapshot: SnapshotInfo) -> None:
        (snapshot_dir / snapshot.key).unlink()

    return lose


class ScopedProvider:
    """The real provider with its listings narrowed to sandboxes this test knows.

    The reconciler removes every labelled container that its own event log does not own. On a Docker
    engine shared with other test runs (or an engineer's `sandboxctl`), a reconcile in a test would reap
    their containers; this view keeps the test's reconcile to the test's own sandboxes. Every other call
    goes to the provider unchanged.
    """

    def __init__(self, inner: SandboxProvider, known: Callable[[], set[str]]) -> None:
        self._inner = inner
        self._known = known
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def list_instances(self) -> list[ProviderInstance]:
        known = self._known()
        return [i for i in self._inner.list_instances() if i.sandbox_id in known]

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        known = self._known()
        return [s for s in self._inner.list_snapshots() if s[0] in known]


# ------------------------------------------------------------------------------------------- harness


@pytest.fixture(params=PROVIDER_PARAMS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "e2b":
        fake: FakeE2B = request.getfixturevalue("fake_e2b")
        # Stopping the fake (its fixture) kills every process of every sandbox; nothing outlives the test.
        yield Harness("e2b", e2b_provider(fake), lose=lambda snap: fake.lose(snap.key))
        return
    client = request.getfixturevalue("docker_client")
    snapshot_dir = tmp_path / "snapshots"
    h = Harness("docker", docker_provider(client, snapshot_dir), lose=unlink_snapshot(snapshot_dir))
    try:
        yield h
    finally:
        remove_docker_sandboxes(client, h.issued)
