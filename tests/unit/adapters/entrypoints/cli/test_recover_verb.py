"""`sandboxctl recover ID [--json]` against a real SQLite event log (provider calls go to a fake)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sandbox_lifecycle.adapters.composition.bootstrap as bootstrap
import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import ProviderError
from tests.support.fakes import FakeProvider


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", "e2b_test_key_0123456789")
    provider = FakeProvider()
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: provider)
    return provider


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_recover_prints_each_action_then_the_states(
    fake: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    service = build_service(provider=fake)
    sid = service.create("data-app", "conv").id
    service.kernel.apply(service.load(sid), sb.RequestSuspend())  # a crash right after the intent

    code, out, _ = run(capsys, "recover", sid)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("took over the suspending in flight since")
    assert lines[-1] == f"{sid}: suspending -> suspended"

    code, out, _ = run(capsys, "recover", sid, "--json")
    assert code == 0
    assert json.loads(out) == {
        "sandbox_id": sid,
        "before": "suspended",
        "state": "suspended",
        "actions": [],
        "error": None,
    }
    code, out, _ = run(capsys, "recover", sid)
    assert out.splitlines()[0] == "nothing to do: the log and the provider agree"


def test_recover_exits_1_when_the_side_effect_fails_again(
    fake: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    service = build_service(provider=fake)
    sid = service.create("data-app", "conv").id
    service.kernel.apply(service.load(sid), sb.Destroy())
    fake.fail["destroy"] = ProviderError("engine unreachable")
    code, out, _ = run(capsys, "recover", sid, "--json")
    assert code == 1
    assert json.loads(out)["state"] == "destroying"
    assert "engine unreachable" in json.loads(out)["error"]


def test_recover_of_an_unknown_id_is_not_found(
    fake: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "recover", "nope")
    assert code == cli.EXIT_NOT_FOUND
    assert "nope" in err
