"""The writeback job's clone and push with a token the sandbox never sees, on the gvisor provider (the
Docker suite's test with the provider under test replaced; skips without runsc)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from tests.integration.adapters.providers.docker import test_git_push_egress as push
from tests.integration.adapters.providers.docker.test_git_push_egress import (  # noqa: F401
    git_server,
    test_clone_and_push_with_a_token_the_sandbox_never_sees,
)
from tests.integration.adapters.providers.gvisor.conftest import gvisor_provider

pytestmark = pytest.mark.docker
service = push.service


@pytest.fixture
def make_provider(
    docker_client: docker.DockerClient, tmp_path: Path
) -> Callable[[EgressSettings], DockerProvider]:
    return lambda egress: gvisor_provider(docker_client, tmp_path / "snapshots", push.DEPLOYMENT, egress)
