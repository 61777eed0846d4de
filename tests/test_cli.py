"""sandboxctl against a real SQLite event log (provider calls go to a fake at the port)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import sandbox_lifecycle.adapters.bootstrap as bootstrap
import sandbox_lifecycle.adapters.cli.commands as cli
from sandbox_lifecycle.adapters.bootstrap import build_service
from sandbox_lifecycle.core.ports import ExecResult
from sandbox_lifecycle.core.service import SandboxService
from tests.e2b.fake_e2b import FakeE2B
from tests.fakes import FakeProvider


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    yield tmp_path


@pytest.fixture
def service(env: Path) -> SandboxService:
    return build_service(provider=FakeProvider())


class RecordingProvider(FakeProvider):
    """The fake, remembering how each exec was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.execs: list[dict[str, Any]] = []

    def exec(self, ref: str, command: Sequence[str], **kw: Any) -> ExecResult:
        self.execs.append({"command": list(command), **kw})
        return super().exec(ref, command, **kw)


@pytest.fixture
def fake(env: Path, monkeypatch: pytest.MonkeyPatch) -> RecordingProvider:
    """One fake provider behind every service the CLI builds (the seam: the composition root's builder)."""
    provider = RecordingProvider()
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: provider)
    return provider


def log_bytes(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob("sandbox.db*"))}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_read_commands_work_without_provider_credentials(
    service: SandboxService, capsys: pytest.CaptureFixture[str]
) -> None:
    with service.turn("conv-9", "data-app") as sbx:
        pass
    code, out, _ = run(capsys, "ls", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert {k: row[k] for k in ("id", "kind", "state", "provider", "conversation_id", "version")} == {
        "id": sbx.id,
        "kind": "data-app",
        "state": "suspended",
        "provider": "fake",
        "conversation_id": "conv-9",
        "version": 6,
    }
    code, out, _ = run(capsys, "show", sbx.id, "--json")
    assert json.loads(out)["state"] == "suspended"
    code, out, _ = run(capsys, "history", sbx.id, "--json")
    hist = json.loads(out)
    assert [h["type"] for h in hist][:3] == ["CreationRequested", "Created", "TurnStarted"]
    assert set(hist[0]) == {"version", "type", "occurred_at", "from_state", "to_state", "reason", "actor"}
    assert hist[-1]["from_state"] == "suspending" and hist[-1]["to_state"] == "suspended"
    code, out, _ = run(capsys, "history", sbx.id)
    assert "suspending → suspended" in out
    code, out, _ = run(capsys, "ls", "--state", "running", "--json")
    assert json.loads(out) == []


def test_errors_are_actionable_with_distinct_exit_codes(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "show", "nope")
    assert code == cli.EXIT_NOT_FOUND and "no sandbox with id 'nope'" in err
    code, _, err = run(capsys, "ls", "--state", "sleeping")
    assert code == cli.EXIT_USAGE and "unknown state" in err
    code, _, err = run(capsys, "create", "--kind", "data-app")
    assert code == cli.EXIT_ERROR and "E2B_API_KEY" in err
    code, _, err = run(capsys, "sweep", "--now", "tomorrow")
    assert code == cli.EXIT_USAGE and "ISO 8601" in err


def test_replay_verify_detects_tampering(service: SandboxService, capsys: pytest.CaptureFixture[str]) -> None:
    row = service.create("ai-writeback")
    code, out, _ = run(capsys, "replay", "--verify")
    assert code == 0 and "match" in out
    engine = service.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sandboxes SET state = 'running', version = 99 WHERE id = ?", (row.id,))
        conn.exec_driver_sql("DELETE FROM sandbox_deadlines")
    code, out, err = run(capsys, "replay", "--verify")
    assert code == 1 and "3 difference(s)" in err
    assert f"{row.id}: state is 'running' in the read model, 'idle' from the log" in out
    assert f"{row.id}: version is 99 in the read model, 2 from the log" in out
    assert f"{row.id}: idle deadline" in out and "missing" in out
    code, out, _ = run(capsys, "replay", "--rebuild")
    assert code == 0
    code, out, _ = run(capsys, "replay", "--verify")
    assert code == 0


def test_a_write_without_credentials_changes_nothing(
    service: SandboxService, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with service.turn("c", "data-app") as sbx:
        pass
    service.store.engine.dispose()  # type: ignore[attr-defined]
    before = log_bytes(env)
    # Retention is long past in 2999: before the fix this recorded the GC intent, then failed on the
    # missing key and left the sandbox stuck in `destroying`.
    for argv in (
        ("create", "--kind", "data-app"),
        ("sweep", "--now", "2999-01-01T00:00:00Z"),
        ("reconcile",),
        ("resume", sbx.id),
        ("destroy", sbx.id),
        ("touch", sbx.id),
        ("exec", sbx.id, "--", "true"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == cli.EXIT_ERROR, argv
        assert "E2B_API_KEY" in err and "Traceback" not in err and out == "", argv
    assert log_bytes(env) == before
    assert service.get(sbx.id).state == "suspended"


def test_sweep_reports_provider_errors_and_leaves_the_gc_retryable(
    service: SandboxService, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with service.turn("c", "data-app") as sbx:
        pass
    fake_e2b = FakeE2B("the-right-key", env / "e2b")
    fake_e2b.start()
    try:
        # A key E2B refuses is only found out by calling E2B: the GC is recorded, the call fails, the
        # error is reported (not swallowed) and the sandbox is left for a later sweep to finish.
        monkeypatch.setenv("E2B_API_KEY", "a-revoked-key-123")
        monkeypatch.setenv("E2B_API_URL", fake_e2b.url)
        monkeypatch.setenv("E2B_SANDBOX_URL", fake_e2b.url)
        code, out, err = run(capsys, "sweep", "--now", "2999-01-01T00:00:00Z", "--json")
    finally:
        fake_e2b.stop()
    assert code == 1
    errors = json.loads(out)["errors"]
    assert any(sbx.id in e and "401" in e for e in errors), errors
    assert "a-revoked-key-123" not in out + err
    assert service.get(sbx.id).state == "destroying"
    # A working process sweeping after the lease finishes the GC from provider reality.
    report = service.sweep(service.clock().replace(year=2999, minute=30))
    assert report.recovered == [sbx.id]
    row = service.get(sbx.id)
    assert row.state == "expired" and row.expired_reason == "retention"


def test_diagram_is_the_committed_doc(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diagram")
    assert code == 0 and "stateDiagram-v2" in out and "suspended --> resuming: request_resume" in out
    doc = (Path(__file__).parent.parent / "docs" / "lifecycle.md").read_text()
    assert out.strip() in doc, "docs/lifecycle.md is stale: regenerate it with `sandboxctl diagram`"
