"""`sandboxctl agent`: events streamed one JSON object a line, the agent's status as the exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.agent import events as ev
from sandbox_lifecycle.adapters.agent.scripted_model import Fail, Reply, ScriptedModel
from sandbox_lifecycle.adapters.composition import bootstrap
from sandbox_lifecycle.adapters.entrypoints.cli import commands as cli
from tests.support.agent_providers import AgentReadyProvider
from tests.support.agent_scripts import first_turn


@pytest.fixture
def provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: ScriptedModel, host_claude: str
) -> AgentReadyProvider:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    fake = AgentReadyProvider(
        sandbox_env={"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "scripted-no-secret"},
        path=os.path.dirname(host_claude),
    )
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: fake)
    return fake


def test_agent_streams_json_events_and_continues_a_suspended_sandbox(
    provider: AgentReadyProvider, model: ScriptedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["create", "--kind", "data-app", "--json"]) == 0
    sandbox_id = json.loads(capsys.readouterr().out)["id"]
    model.extend(first_turn())
    assert cli.main(["agent", sandbox_id, "--json", "write hello.txt"]) == 0
    lines = capsys.readouterr().out.splitlines()
    events = [ev.event_from_dict(json.loads(line)) for line in lines]
    assert events[0].kind == "session_started" and events[-1].kind == "result"
    assert [e.name for e in events if isinstance(e, ev.ToolUse)] == ["Write", "Bash"]
    assert cli.main(["suspend", sandbox_id]) == 0
    capsys.readouterr()

    model.extend([Reply("second turn, continued")])
    # Options after the id and the prompt; the suspended sandbox is resumed for the run.
    assert cli.main(["agent", sandbox_id, "and now?", "--continue"]) == 0
    out = capsys.readouterr().out
    assert "[assistant] second turn, continued" in out and "[result] success" in out
    assert "ran-ok" in json.dumps(model.agent_requests()[-1]["messages"])


def test_agent_exits_non_zero_with_a_message_when_the_model_refuses(
    provider: AgentReadyProvider, model: ScriptedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["create", "--kind", "data-app", "--json"]) == 0
    sandbox_id = json.loads(capsys.readouterr().out)["id"]
    model.extend([Fail(401, "authentication_error", "token revoked")])
    code = cli.main(["agent", sandbox_id, "hi", "--model-retries", "0"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "model call failed" in err and "401" in err
    assert "scripted-no-secret" not in out + err
