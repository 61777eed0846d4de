"""The ai-writeback job on the host tier: the real CLI and git, the sample dbt project served by the job's
git server on loopback, two turns of one conversation on one branch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from examples.jobs.git_server import GitServer
from examples.jobs.scripted import SAMPLE_PROJECT, WRITEBACK_PROMPTS, writeback_turns
from examples.jobs.writeback import writeback_turn
from sandbox_lifecycle.adapters.agent.scripted_model import ScriptedModel
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from tests.support.agent_providers import AgentReadyProvider

TOKEN = "git-token-for-the-test"


def test_two_turns_commit_and_push_on_the_conversation_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: ScriptedModel, host_claude: str
) -> None:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    provider = AgentReadyProvider(
        sandbox_env={"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "scripted-no-secret"},
        path=os.path.dirname(host_claude),
    )
    service = build_service(provider=provider)
    (tmp_path / "git").mkdir()
    first, second = writeback_turns()
    with GitServer(tmp_path / "git", TOKEN) as git:
        git.publish(SAMPLE_PROJECT, "jaffle")
        url = git.url("jaffle")
        model.extend(first)
        with service.turn("conv-wb", "ai-writeback") as sbx:
            one = writeback_turn(sbx, "conv-wb", WRITEBACK_PROMPTS[0], repo_url=url, token=TOKEN)
        assert one.agent.ok and one.branch == "ai/conv-wb" and one.commit
        assert "+            average_order_value:" in one.diff and "Average order amount." in one.diff
        assert git.diff("jaffle", "main", "ai/conv-wb") == one.diff
        assert one.validation.ok

        model.extend(second)
        with service.turn("conv-wb", "ai-writeback") as sbx:
            two = writeback_turn(sbx, "conv-wb", WRITEBACK_PROMPTS[1], repo_url=url, token=TOKEN)
        assert two.commit and two.commit != one.commit
        assert "Average order total in dollars" in two.diff and "Average order amount." not in two.diff
        assert git.log("jaffle", "ai/conv-wb")[:2] == [WRITEBACK_PROMPTS[1][:72], WRITEBACK_PROMPTS[0][:72]]
        # Turn 2 continued the agent's conversation: the model was sent turn 1.
        assert WRITEBACK_PROMPTS[0] in str(model.agent_requests()[-1]["messages"])
    # The token reached git through the environment only, never the event log.
    assert all(TOKEN not in str(e.data) for e in service.store.read_stream(sbx.id))
