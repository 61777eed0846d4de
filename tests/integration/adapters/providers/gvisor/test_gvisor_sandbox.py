"""The egress allow-list from inside a real runsc sandbox (runsc uses the network namespace the engine made
for the container: the per-sandbox internal network and the egress point apply as on runc).

The suites that run on both runtimes live beside this folder: what the sandbox sees of the host kernel
and the host-escape checks (../test_isolation.py), resource abuse (../test_resource_abuse.py), the
attacks on the egress point (tests/integration/attacks/, ../docker/test_gateway_attacks.py) and the
kill -9 recovery suite (tests/contract/core/test_recovery.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
from sandbox_lifecycle.core.kinds import DATA_APP
from tests.integration.adapters.providers.docker.test_egress import ALLOWED, fetch
from tests.integration.adapters.providers.gvisor.conftest import gvisor_provider
from tests.support import session
from tests.support.fixtures.providers import Harness, remove_docker_sandboxes

pytestmark = pytest.mark.docker


@pytest.fixture
def egress_provider(
    docker_client: docker.DockerClient, tmp_path: Path, egress_settings: EgressSettings
) -> Iterator[GVisorProvider]:
    deployment = session.new_deployment("gvnet")
    try:
        yield gvisor_provider(docker_client, tmp_path / "snapshots", deployment, egress_settings)
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])


def test_the_egress_allow_list_applies_from_inside(
    egress_provider: GVisorProvider, allowed_port: int, other_port: int, bridge_address: str
) -> None:
    p = egress_provider
    ref = p.create(Harness.new_id(), DATA_APP)

    assert fetch(p, ref, f"http://{ALLOWED}:{allowed_port}/hi") == "200 hello /hi"
    unlisted = fetch(p, ref, f"http://unlisted.test:{allowed_port}/")
    assert unlisted.startswith("403 ") and "SANDBOX_EGRESS_ALLOW_DATA_APP" in unlisted
    raw = fetch(p, ref, f"http://{bridge_address}:{other_port}/")
    assert raw.startswith("403 ") and "raw IP" in raw
    # Around the proxy, straight to the host: no route (runsc uses the container's own namespace).
    direct = p.exec(
        ref,
        ["python3", "-c", f"import socket; socket.create_connection(({bridge_address!r}, {other_port}), 3)"],
        timeout=30,
    )
    assert direct.exit_code != 0
