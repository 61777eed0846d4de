"""`sandboxctl exec --detach`, `ps`, `logs`, `kill` and `url`, in process, on the fake provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandbox_lifecycle.adapters.composition.bootstrap as bootstrap
import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from tests.support.fakes import FakeProvider


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    provider = FakeProvider()
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: provider)
    yield provider
    for ref in list(provider.background):
        provider._stop_processes(ref)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_detach_ps_logs_kill(running: FakeProvider, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    sid = json.loads(out)["id"]

    code, out, _ = run(
        capsys, "exec", "--detach", sid, "--env", "WHO=cli", "--", "sh", "-c", 'echo "hi $WHO"; sleep 60'
    )
    assert code == 0
    pid = out.strip()
    code, out, _ = run(capsys, "ps", sid, "--json")
    [listed] = json.loads(out)
    assert (code, listed["id"], listed["running"], listed["command"][0]) == (0, pid, True, "sh")
    code, out, _ = run(capsys, "ps", sid)
    assert code == 0 and pid in out and "running" in out
    for _ in range(100):  # the process needs a moment to print
        code, out, err = run(capsys, "logs", sid, pid)
        if out:
            break
    assert (code, out, err) == (0, "hi cli\n", "")

    assert run(capsys, "kill", sid, pid)[0] == 0

    _, out, _ = run(capsys, "ps", sid, "--json")
    assert [(p["running"], p["exit_code"]) for p in json.loads(out)] == [(False, 137)]
    code, _, err = run(capsys, "logs", sid, "0123456789abcde")
    assert code == cli.EXIT_NOT_FOUND and "no background process" in err


def test_url_and_its_usage_errors(running: FakeProvider, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    sid = json.loads(out)["id"]

    assert run(capsys, "url", sid, "3000")[:2] == (0, "http://127.0.0.1:3000\n")
    code, _, err = run(capsys, "url", sid, "70000")
    assert code == cli.EXIT_USAGE and "port number" in err
