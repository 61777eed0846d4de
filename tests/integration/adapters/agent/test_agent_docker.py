"""The agent's turns in a real Docker sandbox: the real CLI, through the real egress point and gateway,
to the scripted model. Turn 1 writes a file and runs a command; the turn suspends; turn 2 resumes with
``--continue`` and the model is sent turn 1's conversation (``~/.claude`` survived the snapshot).

The scripted model listens on the Docker bridge's host address, where the egress container (on the
default bridge) reaches it; the sandbox itself reaches only the egress point. The backend's
``ANTHROPIC_BASE_URL`` names the model (on loopback: the provider rewrites a loopback upstream to the
bridge address for the egress container) as the upstream the gateway forwards to, and its
``ANTHROPIC_API_KEY`` is a test value that must never appear in the sandbox.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.agent.claude_code import run_agent
from sandbox_lifecycle.adapters.agent.scripted_model import Reply, ScriptedModel, working_directory, write
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from sandbox_lifecycle.core.service import SandboxService
from tests.support import session
from tests.support.agent_scripts import first_turn, second_turn

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BACKEND_KEY = "sk-backend-test-key-never-in-the-sandbox"


@pytest.fixture
def bridge_model(docker_engine: docker.DockerClient) -> Iterator[ScriptedModel]:
    gateway = bridge_host_address(docker_engine.api.inspect_network("bridge"))
    with ScriptedModel(host=gateway) as server:
        yield server


@pytest.fixture
def docker_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bridge_model: ScriptedModel
) -> Iterator[SandboxService]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    monkeypatch.setenv("SANDBOX_DEPLOYMENT", session.new_deployment("agent"))
    monkeypatch.setenv("SANDBOX_EGRESS_STATE_DIR", str(tmp_path / "egress"))
    # A loopback upstream: the provider hands the egress container the bridge address with its port.
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{bridge_model.port}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", BACKEND_KEY)
    monkeypatch.setenv("SANDBOX_EGRESS_ALLOW_DATA_APP", "")
    service = build_service()
    caps = getattr(service.provider, "capabilities", None)
    if caps is None or not getattr(caps, "egress_allow_list", False):
        pytest.skip(
            "the Docker provider has no egress point and gateway yet (capabilities.egress_allow_list is "
            "off): a Docker sandbox cannot reach a model; tests/**/test_agent_turns.py runs the same "
            "turns with the CLI on the host"
        )
    yield service
    for row in service.list():
        if row.state not in ("destroyed", "expired"):
            service.destroy(row.id)
    # The deployment's egress point goes once it has no sandbox left (what the sweep does after a lease).
    remove_unused = getattr(service.provider, "remove_unused_network", None)
    if remove_unused is not None:
        remove_unused(datetime.now(UTC) + timedelta(days=1))


def test_two_agent_turns_in_a_docker_sandbox_through_the_gateway(
    docker_service: SandboxService, bridge_model: ScriptedModel
) -> None:
    bridge_model.extend(first_turn())
    with docker_service.turn("conv-docker-agent", "data-app") as sbx:
        result = run_agent(sbx, "write hello.txt and run it", timeout=300)
        assert sbx.read_file("hello.txt") == b"hello from turn 1\n"
        environ = sbx.exec("env").stdout
    assert result.ok and [t.name for t in result.tool_uses()] == ["Write", "Bash"]
    assert BACKEND_KEY not in environ
    assert docker_service.get(sbx.id).state == "suspended"

    bridge_model.extend(second_turn())
    with docker_service.turn("conv-docker-agent", "data-app") as again:
        resumed = run_agent(again, "what did you do?", continue_=True, timeout=300)
    assert resumed.ok and resumed.text == "Turn 2: I remember turn 1 (hello.txt seen)."
    sent = json.dumps(bridge_model.agent_requests()[-1]["messages"])
    assert "ran-ok" in sent and "what did you do?" in sent
    # The gateway put the real key where the sandbox's token was: the model saw the key, never a token.
    assert {r.api_key_sha256 for r in bridge_model.requests} == {
        hashlib.sha256(BACKEND_KEY.encode()).hexdigest()
    }


def test_after_a_rewind_continue_resumes_from_that_turn(
    docker_service: SandboxService, bridge_model: ScriptedModel
) -> None:
    """docs/checkpoints.md: the agent's state lives in the workspace (~/.claude), so rewinding the
    sandbox to turn 1's checkpoint rewinds the conversation `--continue` continues too."""
    conv = "conv-docker-rewind"
    bridge_model.extend(first_turn())
    with docker_service.turn(conv, "data-app") as sbx:
        assert run_agent(sbx, "write hello.txt and run it", timeout=300).ok
    (turn1,) = docker_service.checkpoints(sbx.id)

    bridge_model.extend(
        [
            lambda body: Reply("Writing b.", [write(f"{working_directory(body)}/b.txt", "B\n")]),
            Reply("Done with b."),
        ]
    )
    with docker_service.turn(conv, "data-app") as again:
        assert run_agent(again, "write b.txt TURN-TWO-MARKER", continue_=True, timeout=300).ok
        assert again.read_file("b.txt") == b"B\n"

    docker_service.rewind(sbx.id, turn1.version)
    bridge_model.extend(second_turn())
    with docker_service.turn(conv, "data-app") as third:
        resumed = run_agent(third, "what did you do?", continue_=True, timeout=300)
        assert not third.exists("b.txt")
        assert third.read_file("hello.txt") == b"hello from turn 1\n"
    assert resumed.ok and resumed.text == "Turn 2: I remember turn 1 (hello.txt seen)."
    sent = json.dumps(bridge_model.agent_requests()[-1]["messages"])
    assert "ran-ok" in sent and "what did you do?" in sent
    assert "TURN-TWO-MARKER" not in sent and "b.txt" not in sent
