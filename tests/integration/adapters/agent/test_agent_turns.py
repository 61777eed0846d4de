"""Agent turns through the real service API and the real CLI, against the scripted model.

This tier runs the CLI on the host through the FakeProvider (whose commands run in a directory standing
for the sandbox home, and whose suspend keeps only the kind's workspace paths, as Docker's does), so it
needs neither a Docker sandbox that can reach a model nor the network: the model is on loopback.
The Docker tier (tests/integration/adapters/agent/test_agent_docker.py) runs the same turns in a real sandbox.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.agent import events as ev
from sandbox_lifecycle.adapters.agent.claude_code import AgentTimeout, ModelUnreachable, run_agent
from sandbox_lifecycle.adapters.agent.scripted_model import ScriptedModel
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.service import SandboxService
from tests.support.agent_providers import AgentReadyProvider
from tests.support.agent_scripts import first_turn, second_turn


def model_env(url: str) -> dict[str, str]:
    # What the provider's gateway wiring puts in a real sandbox; here the scripted model on loopback.
    return {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "scripted-no-secret"}


@pytest.fixture
def service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: ScriptedModel, host_claude: str
) -> SandboxService:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    provider = AgentReadyProvider(sandbox_env=model_env(model.url), path=os.path.dirname(host_claude))
    return build_service(provider=provider)


def test_two_turns_the_second_continues_the_first_after_a_suspend(
    service: SandboxService, model: ScriptedModel
) -> None:
    model.extend(first_turn())
    streamed: list[ev.AgentEvent] = []
    with service.turn("conv-agent", "data-app") as sbx:
        result = run_agent(sbx, "write hello.txt and run it", on_event=streamed.append)
        written = sbx.read_file("hello.txt").decode()
    assert result.ok and result.text == "Done: wrote hello.txt and ran it."
    assert written == "hello from turn 1\n"
    assert streamed == result.events
    assert [t.name for t in result.tool_uses()] == ["Write", "Bash"]
    bash_result = [e for e in result.events if isinstance(e, ev.ToolResult)][1]
    assert bash_result.content == "hello from turn 1\nran-ok"
    assert result.cost_usd > 0 and result.num_turns == 3
    assert service.get(sbx.id).state == "suspended"

    model.extend(second_turn())
    with service.turn("conv-agent", "data-app") as again:
        assert again.id == sbx.id
        resumed = run_agent(again, "what did you do?", continue_=True)
    assert resumed.ok and resumed.text == "Turn 2: I remember turn 1 (hello.txt seen)."
    assert resumed.session_id == result.session_id
    # The conversation the model is sent in turn 2 holds turn 1: the CLI's state survived the snapshot.
    turn2 = model.agent_requests()[-1]["messages"]
    sent = json.dumps(turn2)
    assert "write hello.txt and run it" in sent and "ran-ok" in sent and "what did you do?" in sent
    tool_ids = [t.id for t in result.tool_uses()]
    assert all(i in sent for i in tool_ids)
    assert [h.type for h in service.history(sbx.id)].count("Suspended") == 2


def test_turn_one_without_continue_starts_a_fresh_conversation(
    service: SandboxService, model: ScriptedModel
) -> None:
    model.extend(first_turn())
    with service.turn("conv-fresh", "data-app") as sbx:
        run_agent(sbx, "first")
    model.extend(second_turn())
    with service.turn("conv-fresh", "data-app") as sbx:
        fresh = run_agent(sbx, "second, not continued")
    assert fresh.text == "Turn 2: I remember turn 1 (nothing seen)."


def test_a_refused_model_endpoint_is_a_bounded_model_unreachable(service: SandboxService) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: refused
        with service.turn("conv-refused", "data-app") as sbx, pytest.raises(ModelUnreachable) as info:
            run_agent(sbx, "hi", env=model_env(f"http://127.0.0.1:{closed}"), model_retries=1, timeout=120)
    assert "ECONNREFUSED" in str(info.value) or "Connection refused" in str(info.value)
    assert any(isinstance(e, ev.ModelRetry) for e in info.value.events)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A server that accepts connections and never answers (a hung upstream)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_silent_model_endpoint_is_bounded_by_the_model_timeout(
    service: SandboxService, silent_endpoint: str
) -> None:
    with (
        service.turn("conv-silent", "data-app") as sbx,
        pytest.raises((ModelUnreachable, AgentTimeout)) as info,
    ):
        run_agent(sbx, "hi", env=model_env(silent_endpoint), model_timeout=2, model_retries=0, timeout=120)
    assert isinstance(info.value, ModelUnreachable), info.value


def test_bare_mode_continues_too(service: SandboxService, model: ScriptedModel) -> None:
    model.extend(first_turn())
    with service.turn("conv-bare", "data-app") as sbx:
        assert run_agent(sbx, "write hello.txt and run it", bare=True).ok
    model.extend(second_turn())
    with service.turn("conv-bare", "data-app") as sbx:
        again = run_agent(sbx, "what did you do?", continue_=True, bare=True)
    assert again.text == "Turn 2: I remember turn 1 (hello.txt seen)."
