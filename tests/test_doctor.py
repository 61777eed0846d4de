"""`sandboxctl doctor` on the real pieces: SQLite, the Docker engine, the E2B SDK on the loopback fake."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandbox_lifecycle.adapters.cli.commands as cli
import sandbox_lifecycle.adapters.cli.doctor as doctor
from sandbox_lifecycle.adapters.bootstrap import build_service
from tests.e2b.fake_e2b import FakeE2B
from tests.fakes import FakeProvider

KEY = "e2b-doctor-right-key-9f8e"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["doctor", "--json", *argv])
    out, _ = capsys.readouterr()
    report = json.loads(out)
    return code, report


def status(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    for name in ("SANDBOX_DATABASE_URL", "S3_BUCKET", "SANDBOX_LOG_FORMAT", "SANDBOX_SNAPSHOT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SANDBOX_DEPLOYMENT", "doctor")
    return tmp_path


@pytest.fixture
def e2b(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeE2B]:
    fake = FakeE2B(KEY, env / "e2b")
    fake.start()
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", KEY)
    monkeypatch.setenv("E2B_API_URL", fake.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", fake.url)
    try:
        yield fake
    finally:
        fake.stop()


def migrate(env: Path) -> None:
    build_service({"SANDBOX_DATA_DIR": str(env), "SANDBOX_PROVIDER": "docker"}, provider=FakeProvider())


def test_e2b_with_a_valid_key_passes(e2b: FakeE2B, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    migrate(env)
    code, report = run(capsys)
    assert code == 0 and report["ok"] is True
    assert status(report) == {
        "settings": "ok",
        "database": "ok",
        "provider": "ok",
        "templates": "warn",
        "snapshot store": "ok",
        "scheduler": "ok",
        "egress point": "not configured",
        "gateway": "not configured",
    }
    assert set(check(report, "provider")) == {"name", "status", "detail", "fix"}


def test_a_key_e2b_refuses_fails_with_what_to_do(
    e2b: FakeE2B, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(env)
    monkeypatch.setenv("E2B_API_KEY", "e2b-revoked-key-0000")
    code, report = run(capsys)
    assert code == 1 and report["ok"] is False
    provider = check(report, "provider")
    assert provider["status"] == "fail"
    assert "E2B_API_KEY" in provider["fix"]
    assert "e2b-revoked-key-0000" not in json.dumps(report)


def test_an_unmigrated_database_and_an_overdue_timer_fail(
    e2b: FakeE2B, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run(capsys)
    assert code == 1
    db = check(report, "database")
    assert db["status"] == "fail" and "revision none" in db["detail"]
    assert db["fix"] == "run `sandboxctl db upgrade`"
    assert check(report, "scheduler")["status"] == "fail"  # skipped: it needs the database

    # Migrated, with an idle timer long overdue and nobody sweeping.
    monkeypatch.setenv("SANDBOX_IDLE_TIMEOUT_MS", "1")
    monkeypatch.setenv("SANDBOX_SWEEP_INTERVAL_MS", "1")
    build_service(provider=FakeProvider()).create("data-app", "conv")
    time.sleep(0.05)
    code, report = run(capsys)
    assert code == 1
    assert check(report, "database")["status"] == "ok"
    lag = check(report, "scheduler")
    assert lag["status"] == "fail" and "sandboxctl scheduler" in lag["fix"]


def test_a_plugged_check_fills_its_slot(
    e2b: FakeE2B, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(env)
    monkeypatch.setitem(
        doctor._PLUGGED,
        "gateway",
        lambda ctx: doctor.Check("gateway", doctor.FAIL, "no answer on :8081", "start the egress container"),
    )
    code, report = run(capsys)
    assert code == 1
    assert check(report, "gateway") == {
        "name": "gateway",
        "status": "fail",
        "detail": "no answer on :8081",
        "fix": "start the egress container",
    }


@pytest.mark.docker
def test_docker_checks_the_engine_images_and_snapshot_dir(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], docker_engine: object
) -> None:
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    migrate(env)
    code, report = run(capsys)
    assert status(report)["images"] == "ok" and status(report)["provider"] == "ok", report
    assert check(report, "snapshot store")["status"] == "ok"
    assert code == 0
    monkeypatch.setenv("SANDBOX_DOCKER_IMAGE", "sandbox-lifecycle-no-such-image:none")
    code, report = run(capsys)
    images = check(report, "images")
    assert code == 1 and images["status"] == "fail"
    assert "sandbox-lifecycle-no-such-image:none (data-app)" in images["detail"]
    # Human output: the failing line, then what to do.
    assert cli.main(["doctor"]) == 1
    out, _ = capsys.readouterr()
    assert "images           FAIL" in out and "-> build or pull them" in out
