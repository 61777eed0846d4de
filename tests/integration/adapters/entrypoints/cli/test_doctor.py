"""`sandboxctl doctor` on the real pieces: SQLite, the Docker engine, the E2B SDK on the loopback fake."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
import sandbox_lifecycle.adapters.entrypoints.cli.doctor as doctor
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.gateway.state import GatewayState
from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from tests.support import session
from tests.support.fake_e2b import FakeE2B
from tests.support.fake_upstream import running_gateway
from tests.support.fakes import FakeProvider
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, remove_network_leftovers
from tests.unit.adapters.providers.docker.test_bridge import NAME

KEY = "e2b-doctor-right-key-9f8e"
MODEL_KEY = "sk-ant-doctor-model-key-5a5a"


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
    monkeypatch.setenv("SANDBOX_DEPLOYMENT", session.new_deployment("doctor"))
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
        "egress point": "ok",
        "gateway": "not configured",
    }
    assert "SANDBOX_GATEWAY_PUBLIC_URL" in check(report, "gateway")["fix"]
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


@pytest.mark.docker
def test_docker_names_the_engine_facts_it_relies_on(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], docker_engine: Any
) -> None:
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    migrate(env)
    _, report = run(capsys)
    engine = check(report, "engine")
    info = docker_engine.api.info()
    assert engine["status"] == "ok", engine
    assert f"storage {info['Driver']}" in engine["detail"]
    assert f"runtime {info['DefaultRuntime']}" in engine["detail"]
    address = bridge_host_address(docker_engine.api.inspect_network("bridge"))
    assert f"host address on the default bridge {address}" in engine["detail"]


def test_an_unknown_bridge_address_fails_only_when_a_loopback_model_needs_it(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sandbox_lifecycle.adapters.entrypoints.cli import doctor
    from sandbox_lifecycle.adapters.providers.docker.doctor import check_engine

    class Api:
        def info(self) -> dict[str, Any]:
            return {"ServerVersion": "20.10.24", "Driver": "overlay2", "DefaultRuntime": "runc"}

        def inspect_network(self, name: str) -> dict[str, Any]:
            # A first-start bridge whose interface this namespace does not have.
            return {"IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}, "Options": {NAME: "nosuch0"}}

    class Client:
        api = Api()

        def close(self) -> None:
            pass

    monkeypatch.setattr("docker.from_env", lambda: Client())
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    for url, expected in (("http://127.0.0.1:9", "fail"), ("https://models.example.test", "warn")):
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        ctx = doctor.Context(Settings.from_env())
        ctx.provider = object()
        found = check_engine(ctx)
        assert found.status == expected, found
        assert "no interface nosuch0" in found.detail and "storage overlay2" in found.detail
        assert found.fix and "network namespace" in found.fix


def _gateway_env(monkeypatch: pytest.MonkeyPatch, url: str, state: Path) -> None:
    monkeypatch.setenv("SANDBOX_GATEWAY_PUBLIC_URL", url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", MODEL_KEY)
    monkeypatch.setenv("SANDBOX_EGRESS_STATE_DIR", str(state))


def test_an_e2b_gateway_sharing_the_state_dir_passes_and_one_reading_another_fails(
    e2b: FakeE2B, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(env)
    state = GatewayState(env / "egress")
    state.write_upstream("https://api.anthropic.com", MODEL_KEY)  # what `sandboxctl gateway` writes
    with running_gateway(state.state_dir) as gateway:
        _gateway_env(monkeypatch, gateway.url, state.state_dir)
        code, report = run(capsys)
    found = check(report, "gateway")
    assert code == 0 and found["status"] == "ok", found
    assert f"sharing state dir {state.state_dir}" in found["detail"]
    assert "upstream.json forwards to https://api.anthropic.com" in found["detail"]
    assert os.listdir(state.state_dir / "tokens") == []  # the probe token is revoked again
    assert MODEL_KEY not in json.dumps(report)

    # A gateway on another state directory refuses every token issued here.
    elsewhere = GatewayState(env / "elsewhere")
    elsewhere.write_upstream("https://api.anthropic.com", MODEL_KEY)
    with running_gateway(elsewhere.state_dir) as gateway:
        _gateway_env(monkeypatch, gateway.url, state.state_dir)
        code, report = run(capsys)
    found = check(report, "gateway")
    assert code == 1 and found["status"] == "fail"
    assert "does not read this host's state dir" in found["detail"]
    assert "SANDBOX_EGRESS_STATE_DIR" in found["fix"]


def test_an_e2b_gateway_that_does_not_answer_fails_with_what_to_run(
    e2b: FakeE2B, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(env)
    with socket.socket() as sock:  # a loopback port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _gateway_env(monkeypatch, f"http://127.0.0.1:{port}", env / "egress")
    code, report = run(capsys)
    found = check(report, "gateway")
    assert code == 1 and found["status"] == "fail"
    assert f"no gateway answers at http://127.0.0.1:{port}" in found["detail"]
    assert "run `sandboxctl gateway`" in found["fix"]


@pytest.mark.docker
def test_docker_egress_point_absent_running_and_its_state_dir(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], docker_engine: Any
) -> None:
    deployment = session.new_deployment("doctor")
    state_dir = env / "egress"
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    monkeypatch.setenv("SANDBOX_DEPLOYMENT", deployment)
    monkeypatch.setenv("SANDBOX_EGRESS_STATE_DIR", str(state_dir))
    monkeypatch.setenv("ANTHROPIC_API_KEY", MODEL_KEY)
    monkeypatch.setenv("SANDBOX_DISK_LIMIT_MB", "0")
    migrate(env)
    name = f"sandbox-lifecycle-egress-{deployment}"
    try:
        code, report = run(capsys)
        found = check(report, "egress point")
        assert found["status"] == "ok", found
        assert f"{name} not running: it starts on first need" in found["detail"]
        assert "is created on first need" in found["detail"]

        # The first sandbox's network starts the egress container and writes upstream.json.
        from sandbox_lifecycle.adapters.composition.bootstrap import build_provider

        network = build_provider(Settings.from_env()).network
        sid = f"{deployment}-sbx"
        network.prepare(sid, "data-app")
        network.release(sid)
        code, report = run(capsys)
        found = check(report, "egress point")
        assert code == 0 and found["status"] == "ok", found
        assert f"{name} running" in found["detail"] and "private (0700)" in found["detail"]
        assert "upstream.json forwards to https://api.anthropic.com" in found["detail"]
        assert MODEL_KEY not in json.dumps(report)
        assert "the proxy answers a request" in found["detail"]

        # Running is not answering: a proxy stopped in its tracks fails the probe through its own path.
        from tests.integration.adapters.providers.docker.test_egress_attack import FREEZE

        assert docker_engine.containers.get(name).exec_run(["python3", "-c", FREEZE]).exit_code == 0
        code, report = run(capsys)
        found = check(report, "egress point")
        assert code == 1 and found["status"] == "fail", found
        assert "the egress proxy does not answer" in found["detail"]
        assert f"docker restart {name}" in found["fix"]
        docker_engine.containers.get(name).restart(timeout=1)

        state_dir.chmod(0o755)
        (state_dir / "upstream.json").unlink()
        code, report = run(capsys)
        found = check(report, "egress point")
        assert code == 1 and found["status"] == "fail"
        assert "mode 755" in found["detail"] and f"`chmod 700 {state_dir}`" in found["fix"]
        assert "upstream.json is missing" in found["detail"]

        docker_engine.containers.get(name).stop(timeout=1)
        state_dir.chmod(0o700)
        network.prepare(sid, "data-app")  # rewrites upstream.json (and starts the container again)
        network.release(sid)
        docker_engine.containers.get(name).stop(timeout=1)
        code, report = run(capsys)
        found = check(report, "egress point")
        assert found["status"] == "warn" and "the next sandbox create starts it again" in found["detail"]
        assert f"docker logs {name}" in found["fix"]
    finally:
        remove_network_leftovers(docker_engine, f"{LABEL_DEPLOYMENT}={deployment}")
