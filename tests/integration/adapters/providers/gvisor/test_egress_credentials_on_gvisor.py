"""The credentials and git-push tests of the Docker provider, on the gvisor provider (same egress point,
a runsc sandbox): the suites' tests, with the provider under test replaced. They skip where the engine
has no runsc (the machine's engine), and run on the fresh engine of scripts/test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from tests.integration.adapters.providers.docker import test_egress_credentials as credentials
from tests.integration.adapters.providers.docker.test_egress_credentials import (  # noqa: F401
    ca,
    origins,
    test_credentials_outlive_a_suspend_and_go_with_the_destroy,
    test_the_request_arrives_with_the_credential_and_the_sandbox_never_holds_it,
)
from tests.integration.adapters.providers.gvisor.conftest import gvisor_provider

pytestmark = pytest.mark.docker
service = credentials.service


@pytest.fixture
def make_provider(
    docker_client: docker.DockerClient, tmp_path: Path
) -> Callable[[EgressSettings], DockerProvider]:
    return lambda egress: gvisor_provider(
        docker_client, tmp_path / "snapshots", credentials.DEPLOYMENT, egress
    )
