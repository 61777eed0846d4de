"""The APScheduler ticker: exact wake-ups for near deadlines, interval sweeps as the safety net."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sandbox_lifecycle.adapters.entrypoints.scheduler import Ticker
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import FakeProvider


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_near_deadline_fires_on_time_not_at_the_next_sweep(clean_sqlite_url: str) -> None:
    service = SandboxService(
        open_store(clean_sqlite_url), FakeProvider(), policy=Policy(idle_timeout=timedelta(seconds=1))
    )
    row = service.create("data-app")
    # The interval sweep is an hour away: only the exact date job can suspend the sandbox in time.
    ticker = Ticker(service, timedelta(hours=1))
    started = time.monotonic()
    ticker.start()
    try:
        assert wait_for(lambda: service.get(row.id).state == "suspended", timeout=10)
    finally:
        ticker.stop()
    assert time.monotonic() - started < 5
    assert [h.type for h in service.history(row.id)][-3:] == [
        "IdleTimeoutElapsed",
        "SuspendRequested",
        "Suspended",
    ]


def test_activity_postpones_the_timer(clean_sqlite_url: str) -> None:
    service = SandboxService(
        open_store(clean_sqlite_url), FakeProvider(), policy=Policy(idle_timeout=timedelta(seconds=1.5))
    )
    row = service.create("data-app")
    ticker = Ticker(service, timedelta(milliseconds=200))
    ticker.start()
    try:
        for _ in range(8):  # 2 s of activity, longer than the timeout
            time.sleep(0.25)
            service.touch(row.id)
        assert service.get(row.id).state == "idle"
        assert wait_for(lambda: service.get(row.id).state == "suspended", timeout=10)
    finally:
        ticker.stop()


def test_scheduler_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_PROVIDER": "docker"}
    env.pop("SANDBOX_DATABASE_URL", None)
    sandboxctl = str(Path(sys.executable).with_name("sandboxctl"))
    proc = subprocess.Popen([sandboxctl, "scheduler"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "scheduler running" in proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "scheduler stopped" in out
