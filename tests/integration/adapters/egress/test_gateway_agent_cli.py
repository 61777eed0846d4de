"""The real agent CLI (`claude` in the sandbox image) reaches its model through the gateway.

Everything runs in one container with no network at all: a Messages-API stand-in, the gateway (the
egress package, mounted read-only and run by the image's own python3, standard library only) and the
CLI, all on the container's loopback (see agent_in_container.py). So nothing leaves the machine, and
what the CLI does with ANTHROPIC_BASE_URL, a token for a key and a streamed answer is checked for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sandbox_lifecycle.adapters.egress as egress
from tests.conftest import DOCKER_IMAGES
from tests.support import session

pytestmark = pytest.mark.docker

SCRIPT = Path(__file__).with_name("agent_in_container.py")


@pytest.mark.parametrize("kind", sorted(DOCKER_IMAGES))
def test_claude_cli_streams_its_answer_through_the_gateway_with_a_token(
    docker_engine: Any, kind: str
) -> None:
    package = Path(egress.__file__).parent
    container = docker_engine.containers.run(
        DOCKER_IMAGES[kind],
        ["/opt/run.py", "/opt/gw"],
        entrypoint="python3",
        name=session.new_deployment("gateway-agent"),
        network_mode="none",
        volumes={
            str(package): {"bind": "/opt/gw/egress", "mode": "ro"},
            str(SCRIPT): {"bind": "/opt/run.py", "mode": "ro"},
        },
        detach=True,
    )
    try:
        status = container.wait(timeout=180)
        output = container.logs(stdout=True, stderr=False).decode()
        assert status["StatusCode"] == 0, container.logs().decode()[-3000:]
    finally:
        container.remove(force=True)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["rc"] == 0, result["stderr"]
    assert result["stdout"].strip() == "PONG-through-the-gateway"
    assert result["token_prefix"] == "sbx-agent1"
    # The CLI's model call arrived upstream with the real key, which the CLI itself never had.
    assert result["seen"] and all(call["real_key"] for call in result["seen"])
    assert any(call["path"].startswith("/v1/messages") for call in result["seen"])
    assert result["counters"]["requests"] == len(result["seen"])
    assert result["counters"]["status"] == {"200": len(result["seen"])}
