"""Fault injection: a real SIGKILL at every boundary of every side effect, then a sweep.

After the sweep: no workspace data lost, no orphan instance or snapshot, and the log replays to the
stored projections. Runs on the E2B provider (real SDK, loopback E2B), on Docker (real engine) and on
gVisor (the same engine's runsc runtime; skipped, saying so, on an engine without it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.e2b import fake_env
from tests.support.fixtures.engines import ENGINE_PARAMS, require_runtime

API_KEY = "e2b_test_key_0123456789"
OPS = ["create", "suspend", "resume", "destroy", "gc"]
BOUNDARIES = ["before_intent", "after_intent", "after_side_effect", "after_outcome"]
LEASE_MS = 500
PAYLOAD = b"written in the turn before the crash\n"


@pytest.fixture(params=["e2b", *ENGINE_PARAMS])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "SANDBOX_", "S3_"))}
    base.update(
        {
            "SANDBOX_DATA_DIR": str(tmp_path / "data"),
            "SANDBOX_LEASE_MS": str(LEASE_MS),
            "SANDBOX_SNAPSHOT_RETENTION_MS": "60000",
            # This run's prefix: what the deployment leaves on the host is this session's to clean.
            "SANDBOX_DEPLOYMENT": os.environ["SANDBOX_DEPLOYMENT"],
        }
    )
    if request.param == "e2b":
        fake = FakeE2B(API_KEY, tmp_path / "e2b")
        fake.start()
        try:
            yield {**base, **fake_env(fake), "SANDBOX_PROVIDER": "e2b"}
        finally:
            fake.stop()
    else:
        require_runtime(request.getfixturevalue("docker_engine"), request.param)
        env = {**base, "SANDBOX_PROVIDER": request.param}
        yield env
        # Whatever a failed assertion left behind goes too.
        service = build_service(env)
        for inst in service.provider.list_instances():
            service.provider.destroy(inst.sandbox_id, inst.ref)


def prepare(service: SandboxService, op: str) -> str:
    """A sandbox in the state ``op`` starts from, holding a file written in a turn."""
    if op == "create":
        return "conv-crash"
    row = service.create("data-app", "conv-crash")
    service.write_file(row.id, "notes/crash.txt", PAYLOAD)
    if op in ("resume", "gc"):
        service.suspend(row.id)
    return row.id


def run_worker(env: dict[str, str], op: str, boundary: str, target: str, now: datetime | None) -> Any:
    args = [sys.executable, "-m", "tests.support.crash_worker", op, boundary, target]
    if now is not None:
        args.append(now.isoformat())
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[3]
    )


@pytest.mark.slow
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("op", OPS)
def test_kill_at_every_boundary_then_sweep(env: dict[str, str], op: str, boundary: str) -> None:
    service = build_service(env)
    target = prepare(service, op)
    now = datetime.now(UTC) + timedelta(minutes=2) if op == "gc" else None

    done = run_worker(env, op, boundary, target, now)
    assert done.returncode == -9, (
        f"worker was not killed at {boundary}: {done.returncode} {done.stderr[-2000:]}"
    )

    # The sweep runs once the leases of whatever was in flight ran out.
    after_lease = (now or datetime.now(UTC)) + timedelta(milliseconds=LEASE_MS * 2)
    report = service.sweep(after_lease)
    assert report.errors == [], report.errors

    rows = service.list()
    live = {r.id for r in rows if r.state in ("idle", "running")}
    suspended = {r.id: r for r in rows if r.state == "suspended"}
    assert all(r.state in ("idle", "suspended", "expired") for r in rows), [(r.id, r.state) for r in rows]

    # No orphans: every provider instance belongs to a live sandbox, every snapshot to a checkpoint of a
    # sandbox that is not expired (each suspend's snapshot is kept as one, docs/checkpoints.md), and a
    # suspended sandbox's own snapshot is there.
    instances = {i.sandbox_id for i in service.provider.list_instances() if i.status == "running"}
    assert instances == live
    snapshots = service.provider.list_snapshots()
    named = {(r.id, c.snapshot_key) for r in rows if r.state != "expired" for c in service.checkpoints(r.id)}
    assert {(sid, snap.key) for sid, snap in snapshots} == named
    assert all((sid, row.snapshot_key) in named for sid, row in suspended.items())

    # No data lost: a sandbox that survives still has the file written before the crash.
    for row in rows:
        if row.state != "expired" and op != "create":
            assert service.read_file(row.id, "notes/crash.txt") == PAYLOAD
    if op == "gc" or (op == "destroy" and boundary != "before_intent"):
        # Once the intent is recorded the destroy is finished from reality; the parent's own sweep
        # (past retention) fires a GC that never got its intent in.
        assert [r.state for r in rows] == ["expired"]
    if op == "create" and boundary in ("after_side_effect", "after_outcome"):
        assert [r.state for r in rows] == ["idle"]

    assert verify(service.store, service.policy) == []
