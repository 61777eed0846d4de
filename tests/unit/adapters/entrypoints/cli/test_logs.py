"""`sandboxctl -v` logs what each state-changing command did, as docs/operations.md says: an info line
naming the sandbox (in JSON, its `sandbox_id` field), and never a secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.composition import bootstrap
from sandbox_lifecycle.adapters.entrypoints.cli import commands as cli
from tests.support.fakes import FakeProvider

E2B_KEY = "e2b-key-never-logged-5d0c"
MODEL_KEY = "sk-ant-never-logged-77f1"


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", E2B_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", MODEL_KEY)
    monkeypatch.setenv("SANDBOX_LOG_FORMAT", "json")
    fake = FakeProvider()
    # The seam the CLI tests use: every service the CLI builds gets this provider.
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: fake)
    return fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[dict[str, Any]]]:
    """(exit code, stdout, the JSON log lines on stderr); a line that is not JSON fails the test."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert E2B_KEY not in out + err and MODEL_KEY not in out + err
    return code, out, [json.loads(line) for line in err.splitlines() if line.strip()]


def infos_about(lines: list[dict[str, Any]], sandbox_id: str) -> list[str]:
    return [
        line["message"] for line in lines if line["level"] == "info" and line.get("sandbox_id") == sandbox_id
    ]


@pytest.mark.usefixtures("provider")
def test_each_state_changing_command_logs_an_info_line_with_the_sandbox_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, lines = run(capsys, "-v", "create", "--kind", "data-app", "--json")
    assert code == 0, lines
    sandbox_id = json.loads(out)["id"]
    assert any("create" in m for m in infos_about(lines, sandbox_id)), lines

    for verb in ("touch", "suspend", "resume", "touch", "destroy"):
        code, _, lines = run(capsys, "-v", verb, sandbox_id)
        assert code == 0, (verb, lines)
        messages = infos_about(lines, sandbox_id)
        assert any(m.startswith(f"{verb}:") for m in messages), (verb, lines)


@pytest.mark.usefixtures("provider")
def test_without_v_a_command_that_succeeds_logs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, lines = run(capsys, "create", "--kind", "data-app", "--json")
    assert code == 0
    code, _, lines = run(capsys, "suspend", json.loads(out)["id"])
    assert code == 0 and lines == []
