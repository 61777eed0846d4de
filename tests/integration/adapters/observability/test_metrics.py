"""Prometheus metrics, scraped over loopback HTTP after a scenario on a real SQLite log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.observability.metrics import instrument, serve
from sandbox_lifecycle.core.service import SandboxService
from tests.support import session
from tests.support.fakes import FakeProvider

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def service(tmp_path: Path) -> SandboxService:
    env = {
        "SANDBOX_DATA_DIR": str(tmp_path),
        "SANDBOX_PROVIDER": "docker",
        "SANDBOX_DEPLOYMENT": session.new_deployment("metrics"),
    }
    return build_service(env, provider=FakeProvider())


@pytest.fixture
def served(service: SandboxService, tmp_path: Path) -> Iterator[tuple[SandboxService, int, Path]]:
    gateway = tmp_path / "egress"
    (gateway / "counters").mkdir(parents=True)
    registry = CollectorRegistry()
    instrument(service, registry, gateway_state_dir=gateway)
    server = serve(registry, 0)
    try:
        yield service, server.server_port, gateway
    finally:
        server.shutdown()
        server.server_close()


def test_a_scenario_is_counted_and_scraped(served: tuple[SandboxService, int, Path]) -> None:
    service, port, gateway = served
    a = service.create("data-app", "conv-a")
    b = service.create("ai-writeback", "conv-b")
    service.exec(a.id, ["echo", "hi"])
    service.write_file(a.id, "notes.txt", b"x" * 1000)  # relative to the kind's workdir, in the snapshot
    service.suspend(a.id)
    service.resume(a.id)
    service.suspend(b.id)
    # An instance no sandbox owns: the reconciler removes it.
    service.provider.create("feedfacefeedface", "data-app")
    service.reconcile()
    # The idle timer of `a`, fired by a sweep an hour from now.
    service.fire_due(service.clock() + timedelta(hours=1))
    for sid, body in (
        ("s1", {"requests": 3, "bytes_in": 10, "bytes_out": 100, "status": {"200": 2, "401": 1}}),
        ("s2", {"requests": 1, "bytes_in": 5, "bytes_out": 7, "status": {"200": 1}}),
    ):
        (gateway / "counters" / f"{sid}.json").write_text(json.dumps(body))
    (gateway / "counters" / "torn.json").write_text("{")  # mid-write: skipped, not an error

    m = scrape(port)

    assert value(m, "sandbox_transitions_total", from_state="new", to_state="creating", reason="user") == 2
    assert value(m, "sandbox_transitions_total", from_state="creating", to_state="idle", reason="user") == 2
    assert value(m, "sandbox_transitions_total", from_state="idle", to_state="suspending", reason="user") == 2
    assert (
        value(m, "sandbox_transitions_total", from_state="idle", to_state="suspending", reason="idle_timeout")
        == 1
    )
    assert value(m, "sandbox_provider_call_seconds_count", operation="create", outcome="ok") == 3
    assert value(m, "sandbox_provider_call_seconds_count", operation="exec", outcome="ok") == 1
    assert value(m, "sandbox_provider_call_seconds_count", operation="suspend", outcome="ok") == 3
    assert value(m, "sandbox_snapshot_seconds_count", direction="upload") == 3
    assert value(m, "sandbox_snapshot_seconds_count", direction="download") == 1
    assert value(m, "sandbox_snapshot_bytes_count", direction="upload") == 3
    assert value(m, "sandbox_snapshot_bytes_sum", direction="upload") >= 1000
    assert value(m, "sandbox_timer_lag_seconds_count", kind="idle") == 1
    assert value(m, "sandbox_orphans_removed_total", what="instance") == 1
    assert value(m, "sandbox_live", state="suspended", kind="data-app") == 1
    assert value(m, "sandbox_live", state="suspended", kind="ai-writeback") == 1
    assert value(m, "sandbox_oldest_due_deadline_seconds") == 0
    assert value(m, "sandbox_gateway_requests_total", status="200") == 3
    assert value(m, "sandbox_gateway_requests_total", status="401") == 1
    assert value(m, "sandbox_gateway_bytes_total", direction="out") == 107


def test_a_failing_provider_call_is_counted_as_an_error(served: tuple[SandboxService, int, Path]) -> None:
    service, port, _ = served
    row = service.create("data-app", "conv")
    with pytest.raises(FileNotFoundError):
        service.read_file(row.id, "no/such/file")
    m = scrape(port)
    assert value(m, "sandbox_provider_call_seconds_count", operation="read_file", outcome="error") == 1


def test_an_overdue_deadline_shows_as_lag(served: tuple[SandboxService, int, Path]) -> None:
    service, port, _ = served
    row = service.create("data-app", "conv")
    due = service.store.next_deadline()
    assert due is not None
    # Three days on, and nobody fired the idle timer: the scrape reads the service's clock.
    service.clock = lambda: due + timedelta(days=3)
    m = scrape(port)
    assert value(m, "sandbox_oldest_due_deadline_seconds") == timedelta(days=3).total_seconds()
    assert value(m, "sandbox_live", state="idle", kind="data-app") == 1 and row.state == "idle"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.docker
def test_sandboxctl_scheduler_serves_metrics(tmp_path: Path, docker_engine: object) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SANDBOX_PROVIDER": "docker",
        "SANDBOX_DATA_DIR": str(tmp_path),
        "SANDBOX_DEPLOYMENT": session.new_deployment("metricscli"),
    }
    env.pop("SANDBOX_DATABASE_URL", None)
    sandboxctl = str(Path(sys.executable).with_name("sandboxctl"))
    proc = subprocess.Popen(
        [sandboxctl, "scheduler", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        m: Samples = {}
        for _ in range(120):  # bounded: about 60 s for a loaded machine to start it
            try:
                m = scrape(port)
                break
            except OSError:
                time.sleep(0.5)
        assert ("sandbox_oldest_due_deadline_seconds", ()) in m
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"metrics at http://127.0.0.1:{port}/metrics" in out
