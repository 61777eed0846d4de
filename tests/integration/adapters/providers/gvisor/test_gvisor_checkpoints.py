"""Rewind and fork on gvisor, through the service with SQLite: the Docker provider's whole-archive
checkpoints, which runsc sandboxes write the same way (capabilities.checkpoints)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.integration.adapters.providers.gvisor.conftest import gvisor_provider
from tests.integration.core import test_checkpoints_docker as on_docker
from tests.support.fixtures.providers import new_deployment, remove_docker_sandboxes

pytestmark = pytest.mark.docker


@pytest.fixture
def gvisor_service(docker_client: Any, clean_sqlite_url: str, tmp_path: Path) -> Iterator[SandboxService]:
    deployment = new_deployment()
    store = open_store(clean_sqlite_url)
    try:
        yield SandboxService(
            store, gvisor_provider(docker_client, tmp_path / "snapshots", deployment), policy=on_docker.POLICY
        )
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])
        store.close()


def test_rewind_and_fork_restore_the_first_checkpoint(gvisor_service: SandboxService, tmp_path: Path) -> None:
    on_docker.test_rewind_and_fork_restore_the_first_checkpoint(gvisor_service, tmp_path)
