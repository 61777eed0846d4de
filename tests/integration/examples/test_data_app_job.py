"""The data-app job on the host tier: the agent writes and builds a page, the job serves the build
detached, fetches it through ``sbx.url(port)`` and collects ``dist/``; turn 2 changes it after a resume.

It needs background processes and ports on the handle (``sbx.start``, ``sbx.url``): skipped on a
branch of the module that does not have them yet.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from examples.jobs.data_app import data_app_turn
from examples.jobs.scripted import DATA_APP_PROMPTS, data_app_turns
from sandbox_lifecycle.adapters.agent.scripted_model import ScriptedModel
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.service import TurnHandle
from tests.support.agent_providers import AgentReadyProvider


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not hasattr(TurnHandle, "start"), reason="no background processes (sbx.start) yet")
@pytest.mark.skipif(shutil.which("node") is None, reason="the app's build runs with node")
def test_build_serve_fetch_and_collect_then_change_after_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: ScriptedModel, host_claude: str
) -> None:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    provider = AgentReadyProvider(
        sandbox_env={"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "scripted-no-secret"},
        path=os.path.dirname(host_claude),
    )
    service = build_service(provider=provider)
    first, second = data_app_turns()
    model.extend(first)
    with service.turn("conv-app", "data-app") as sbx:
        one = data_app_turn(sbx, DATA_APP_PROMPTS[0], collect_to=tmp_path / "one", port=free_port())
    assert one.agent.ok and one.title == "Revenue by month"
    assert (tmp_path / "one" / "build.json").exists() and one.files == 2
    assert "<td>2024-02</td>" in (tmp_path / "one" / "index.html").read_text()

    model.extend(second)
    with service.turn("conv-app", "data-app") as sbx:
        two = data_app_turn(
            sbx, DATA_APP_PROMPTS[1], collect_to=tmp_path / "two", continue_=True, port=free_port()
        )
    assert two.agent.ok and two.title == "Revenue by month (v2)"
