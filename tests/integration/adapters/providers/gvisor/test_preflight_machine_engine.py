"""The refusal on a real engine without runsc: this machine's long-lived engine, of which only
`docker info` is read (nothing is created there)."""

from __future__ import annotations

import docker
import pytest

from sandbox_lifecycle.adapters.providers.gvisor.runtime import preflight, runtime_status
from sandbox_lifecycle.core.errors import ProviderError, ProviderRefused

pytestmark = pytest.mark.docker

MACHINE_ENGINE = "unix:///var/run/docker.sock"


def test_an_engine_without_runsc_refuses_the_gvisor_provider() -> None:
    try:
        status = runtime_status(MACHINE_ENGINE)
    except ProviderError as exc:
        pytest.skip(f"no engine at {MACHINE_ENGINE}: {exc}")
    if status.present:
        pytest.skip(f"the engine at {MACHINE_ENGINE} has runsc registered: nothing to refuse")
    client = docker.DockerClient(base_url=MACHINE_ENGINE)
    try:
        with pytest.raises(ProviderRefused, match=r"apt-get install runsc.*runtimeArgs.*restart the engine"):
            preflight(client)
    finally:
        client.close()
