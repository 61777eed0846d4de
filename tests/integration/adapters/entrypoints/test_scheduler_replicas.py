"""Several replicas on one PostgreSQL: schedulers and turns racing, each side effect exactly once.

The provider is the real E2B SDK against the loopback E2B server (cheap enough for hundreds of
sandboxes); the Docker variant of the turn race lives in tests/providers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.replay import verify
from tests.support import session
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.e2b import fake_env
from tests.support.replica_workers import turn_worker

API_KEY = "e2b_test_key_0123456789"
SANDBOXCTL = str(Path(sys.executable).with_name("sandboxctl"))


@pytest.fixture
def fake(tmp_path: Path) -> Any:
    server = FakeE2B(API_KEY, tmp_path / "e2b")
    server.start()
    yield server
    server.stop()


def replica_env(fake: FakeE2B, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(fake_env(fake))
    env.update({"SANDBOX_PROVIDER": "e2b", "SANDBOX_DATABASE_URL": db_url, **extra})
    return env


@pytest.mark.postgres
@pytest.mark.slow
def test_two_schedulers_suspend_every_due_sandbox_exactly_once(fake: FakeE2B, clean_pg_url: str) -> None:
    env = replica_env(fake, clean_pg_url, SANDBOX_IDLE_TIMEOUT_MS="2000", SANDBOX_SWEEP_INTERVAL_MS="300")
    service = build_service(env)
    with ThreadPoolExecutor(8) as pool:
        ids = [row.id for row in pool.map(lambda i: service.create("data-app", f"conv-{i}"), range(200))]
    assert len(set(ids)) == 200
    time.sleep(2.1)  # every sandbox is now past its idle timeout: all due at once

    schedulers = [
        subprocess.Popen(
            [SANDBOXCTL, "scheduler"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all(r.state == "suspended" for r in service.list()):
                break
            time.sleep(0.5)
    finally:
        for proc in schedulers:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30) for proc in schedulers]
    for proc, (out, err) in zip(schedulers, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "scheduler stopped" in out

    states = Counter(r.state for r in service.list())
    assert states == {"suspended": 200}, states
    # None twice, none missed: one pause request per sandbox at the provider...
    pauses = Counter(r.path.split("/")[2] for r in fake.requests("POST", r"/sandboxes/[^/]+/pause"))
    assert len(pauses) == 200 and set(pauses.values()) == {1}, pauses.most_common(3)
    # ...and one elapse and one suspend in each sandbox's log.
    for sid in ids:
        types = Counter(h.type for h in service.history(sid))
        assert types["IdleTimeoutElapsed"] == 1 and types["Suspended"] == 1, (sid, types)
    assert verify(service.store, service.policy) == []


@pytest.mark.postgres
@pytest.mark.parametrize("provider", ["e2b", pytest.param("docker", marks=pytest.mark.docker)])
def test_racing_turns_on_one_conversation_one_proceeds(
    provider: str, fake: FakeE2B, clean_pg_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if provider == "e2b":
        env = replica_env(fake, clean_pg_url)
    else:
        request.getfixturevalue("docker_engine")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "SANDBOX_"))},
            "SANDBOX_PROVIDER": "docker",
            "SANDBOX_DATABASE_URL": clean_pg_url,
            "SANDBOX_DATA_DIR": str(tmp_path / "data"),
            "SANDBOX_DEPLOYMENT": session.new_deployment("race"),
        }
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=turn_worker, args=(env, "conv-race", "ai-writeback", 2.0, barrier, results))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    kinds = Counter(kind for kind, _ in outcomes)
    assert kinds == {"won": 1, "busy": n - 1}, outcomes
    (winner,) = [sid for kind, sid in outcomes if kind == "won"]
    service = build_service(env)
    try:
        assert service.get(winner).state == "suspended"
        assert verify(service.store, service.policy) == []
        assert [r.id for r in service.list()] == [winner]
        if provider == "e2b":
            # Exactly one provider sandbox was made for the conversation, and it is the winner's.
            ours = [s for s in fake.sandboxes() if s.metadata.get("sandbox_lifecycle_id") == winner]
            assert len(ours) == 1 and len(fake.sandboxes()) == 1
        else:
            # Exactly one container was made, and suspending it removed it: none is left behind.
            assert service.provider.list_instances() == []
            creates = [h for h in service.history(winner) if h.type == "Created"]
            assert len(creates) == 1
    finally:
        service.destroy(winner)
