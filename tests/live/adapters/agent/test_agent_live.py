"""The live tier: the same two turns against the real model, through the gateway, when ANTHROPIC_API_KEY
is set (the only test here that sends a request off this machine: the gateway's upstream, never the
sandbox, which reaches only the egress point)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.agent.claude_code import run_agent
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.service import SandboxService
from tests.support import session

pytestmark = [
    pytest.mark.anthropic_live,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("ANTHROPIC_API_KEY"), reason="ANTHROPIC_API_KEY is not set"),
]


@pytest.fixture
def live_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxService]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    monkeypatch.setenv("SANDBOX_DEPLOYMENT", session.new_deployment("agent-live"))
    monkeypatch.setenv("SANDBOX_EGRESS_STATE_DIR", str(tmp_path / "egress"))
    service = build_service()
    if not getattr(getattr(service.provider, "capabilities", None), "egress_allow_list", False):
        pytest.skip("the Docker provider has no egress point and gateway yet")
    yield service
    for row in service.list():
        if row.state not in ("destroyed", "expired"):
            service.destroy(row.id)
    remove_unused = getattr(service.provider, "remove_unused_network", None)
    if remove_unused is not None:
        remove_unused(datetime.now(UTC) + timedelta(days=1))


def test_two_turns_against_the_real_model(live_service: SandboxService) -> None:
    with live_service.turn("conv-live", "data-app") as sbx:
        first = run_agent(
            sbx,
            "Use the Write tool to create hello.txt containing exactly the text hi, then run "
            "`cat hello.txt` with the Bash tool. Reply with one word: done.",
            timeout=600,
        )
        assert sbx.read_file("hello.txt").strip() == b"hi"
    assert first.ok and {"Write", "Bash"} <= {t.name for t in first.tool_uses()}
    with live_service.turn("conv-live", "data-app") as sbx:
        second = run_agent(
            sbx, "Which file did you create in this conversation? Reply with its name only.", continue_=True
        )
    assert second.ok and "hello.txt" in second.text
