"""sandboxctl against a real SQLite event log (provider calls go to a fake at the port)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import sandbox_lifecycle.adapters.composition.bootstrap as bootstrap
import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.ports import ExecResult
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store.sqlite import SqliteEventStore
from tests.support.fake_e2b import FakeE2B
from tests.support.fakes import FakeProvider


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
    """The fake, remembering how each exec was asked for (the streaming callbacks apart) and echoing
    the command instead of running it: these tests are about how the CLI asks, not what runs."""

    def __init__(self) -> None:
        super().__init__()
        self.execs: list[dict[str, Any]] = []

    def exec(self, ref: str, command: Sequence[str], **kw: Any) -> ExecResult:
        on_stdout = kw.pop("on_stdout", None)
        kw.pop("on_stderr", None)
        self.execs.append({"command": list(command), **kw})
        self._inst(ref)  # a gone sandbox is still ProviderLost
        echo = shlex.join(command).encode()
        if on_stdout is not None:
            on_stdout(echo)
        return ExecResult(0, echo, b"")


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
    # Two deadlines deleted: the idle timer's and its warning's (SANDBOX_WARNING_LEAD_MS, a minute).
    assert code == 1 and "4 difference(s)" in err
    assert f"{row.id}: state is 'running' in the read model, 'idle' from the log" in out
    assert f"{row.id}: version is 99 in the read model, 2 from the log" in out
    assert f"{row.id}: idle deadline" in out and "missing" in out
    assert f"{row.id}: warning deadline" in out
    code, out, _ = run(capsys, "replay", "--rebuild")
    assert code == 0
    code, out, _ = run(capsys, "replay", "--verify")
    assert code == 0


def test_a_write_without_credentials_changes_nothing(
    service: SandboxService, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with service.turn("c", "data-app") as sbx:
        pass
    service.store.close()
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


@pytest.mark.parametrize(
    "argv",
    [
        ("ls",),
        ("create", "--kind", "data-app"),
        ("sweep",),
    ],
)
@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SANDBOX_DEPLOYMENT", "../evil", "1-63"),
        ("SANDBOX_IDLE_TIMEOUT_MS", "99999999999999999999", "315360000000"),
        ("SANDBOX_DATABASE_URL", "mysql://root:pw-123@db/x", "postgresql+psycopg://"),
    ],
)
def test_bad_settings_are_one_line_and_touch_nothing(
    service: SandboxService,
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    name: str,
    value: str,
    says: str,
) -> None:
    service.create("data-app")
    service.store.close()
    before = log_bytes(env)
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    monkeypatch.setenv(name, value)
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_ERROR
    assert out == "" and err.count("\n") == 1 and err.startswith("sandboxctl: ")
    assert name in err and says in err and "pw-123" not in err
    assert log_bytes(env) == before


def test_an_unreachable_database_is_named_without_its_password(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDBOX_DATABASE_URL", "postgresql+psycopg://app:pw-secret-9@127.0.0.1:1/sbx")
    code, out, err = run(capsys, "ls")
    assert code == cli.EXIT_ERROR and out == ""
    assert "127.0.0.1:1" in err and "pw-secret-9" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        (
            "exec",
            "ID",
            "--timeout",
            "7",
            "--cwd",
            "/tmp",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--",
            "ls",
            "-la",
        ),
        (
            "exec",
            "--timeout",
            "7",
            "--cwd",
            "/tmp",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "ID",
            "--",
            "ls",
            "-la",
        ),
        ("exec", "--env", "A=1", "ID", "--cwd", "/tmp", "--timeout=7", "--env=B=x=y", "--", "ls", "-la"),
    ],
)
def test_exec_options_go_before_or_after_the_id(
    fake: RecordingProvider, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    sid = json.loads(out)["id"]
    code, out, err = run(capsys, *[sid if a == "ID" else a for a in argv])
    assert code == 0, err
    assert out == "ls -la"  # the fake echoes the command it ran
    (call,) = fake.execs
    assert call == {
        "command": ["ls", "-la"],
        "timeout": 7.0,
        "env": {"A": "1", "B": "x=y"},
        "cwd": "/tmp",
        # The output streams to the terminal; none is kept in memory.
        "max_output_bytes": 0,
    }


def test_exec_command_keeps_its_own_double_dash_and_options(
    fake: RecordingProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    sid = json.loads(out)["id"]
    code, out, _ = run(capsys, "exec", sid, "--", "git", "log", "--timeout", "--", "x")
    assert code == 0 and fake.execs[0]["command"] == ["git", "log", "--timeout", "--", "x"]
    assert fake.execs[0]["timeout"] == 300.0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--timeout", "0"), "86400"),
        (("--timeout", "-1"), "86400"),
        (("--timeout", "nan"), "86400"),
        (("--timeout", "inf"), "86400"),
        (("--timeout", "1e12"), "86400"),
        (("--timeout", "soon"), "86400"),
        (("--env", "NOEQUALS"), "K=V"),
        (("--env", "=value"), "K=V"),
        (("--env", "A B=1"), "K=V"),
    ],
)
def test_bad_exec_options_are_usage_errors(
    fake: RecordingProvider, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    code, _, err = run(capsys, "exec", "some-id", *argv, "--", "true")
    assert code == cli.EXIT_USAGE and says in err and "Traceback" not in err
    assert fake.execs == [] and fake.calls == []


def test_exec_without_a_command_is_a_usage_error(
    fake: RecordingProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "exec", "some-id", "--timeout", "5")
    assert code == cli.EXIT_USAGE and "--" in err
    code, _, err = run(capsys, "exec", "some-id", "--")
    assert code == cli.EXIT_USAGE


def test_replay_verify_and_rebuild_are_one_choice(
    service: SandboxService, capsys: pytest.CaptureFixture[str]
) -> None:
    row = service.create("data-app")
    code, _, err = run(capsys, "replay", "--verify", "--rebuild")
    assert code == cli.EXIT_USAGE and "not allowed with" in err
    engine = service.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sandboxes SET version = 99 WHERE id = ?", (row.id,))
    # --verify only compares: the difference is reported and left as it is.
    assert run(capsys, "replay", "--verify")[0] == 1
    assert run(capsys, "replay")[0] == 1  # verify is the default
    assert service.get(row.id).version == 99
    code, out, _ = run(capsys, "replay", "--rebuild")
    assert code == 0 and "rebuilt" in out
    assert service.get(row.id).version == 2


def test_an_unexpected_error_is_one_line_unless_verbose(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("E2B_API_KEY", "e2b-key-never-shown")

    def boom(self: SandboxService, state: str | None = None) -> list[Any]:
        raise RuntimeError("disk on fire\nsecond line with e2b-key-never-shown")

    monkeypatch.setattr(SandboxService, "list", boom)
    monkeypatch.setattr(SqliteEventStore, "list_sandboxes", boom)  # what `ls` reads once the file exists
    code, out, err = run(capsys, "ls")
    assert code == cli.EXIT_ERROR and out == ""
    assert err == "sandboxctl: RuntimeError: disk on fire (run with -v for the traceback)\n"
    code, _, err = run(capsys, "-v", "ls")
    assert code == cli.EXIT_ERROR and "Traceback" in err and "disk on fire" in err
    assert "e2b-key-never-shown" not in err


def test_usage_errors_exit_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "frobnicate")
    assert code == cli.EXIT_USAGE and "Traceback" not in err
    code, _, err = run(capsys, "show")
    assert code == cli.EXIT_USAGE
    assert run(capsys, "--help")[0] == 0


def test_diagram_is_the_committed_doc(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diagram")
    assert code == 0 and "stateDiagram-v2" in out and "suspended --> resuming: request_resume" in out
    doc = (Path(__file__).parents[5] / "docs" / "lifecycle.md").read_text()
    assert out.strip() in doc, "docs/lifecycle.md is stale: regenerate it with `sandboxctl diagram`"


@pytest.fixture
def running(env: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    """A fake that runs the commands for real (in a host directory), behind every service the CLI builds."""
    provider = FakeProvider()
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: provider)
    return provider


def test_exec_streams_all_of_the_output_and_keeps_the_exit_code(
    running: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    sid = json.loads(out)["id"]
    # Twice the in-memory bound of an exec's output: the terminal still gets every byte.
    size = 2 * running.max_output_bytes
    script = f"head -c {size} /dev/zero | tr '\\0' x; echo; echo oops >&2; exit 3"

    code, out, err = run(capsys, "exec", sid, "--", "sh", "-c", script)

    assert code == 3
    assert out == "x" * size + "\n"
    assert err == "oops\n"


def test_exec_timeout_prints_what_came_before_it(
    running: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    sid = json.loads(out)["id"]

    code, out, err = run(capsys, "exec", "--timeout", "1", sid, "--", "sh", "-c", "echo hi; sleep 5")

    assert code == cli.EXIT_TIMEOUT == 124
    assert out == "hi\n"
    assert "timed out after 1s" in err


def test_a_snapshot_dir_that_is_a_file_is_refused_before_anything_is_written(
    service: SandboxService, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service.create("data-app")
    service.store.close()
    before = log_bytes(env)
    not_a_dir = env / "not-a-dir"
    not_a_dir.write_text("")
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    monkeypatch.setenv("SANDBOX_SNAPSHOT_DIR", str(not_a_dir))
    code, out, err = run(capsys, "create", "--kind", "data-app")
    assert code == cli.EXIT_ERROR
    assert out == "" and err.count("\n") == 1 and "SANDBOX_SNAPSHOT_DIR" in err and "Traceback" not in err
    assert log_bytes(env) == before
