"""SANDBOX_MAX_LIVE across processes on one PostgreSQL, against the real providers.

Eight processes each run two turns on their own conversation with SANDBOX_MAX_LIVE=3, while a
sampler lists the provider's own instances (Docker containers by deployment label; the loopback
E2B server's running sandboxes): no sample may ever show more than three, every turn completes or
gets CapacityExceeded after the wait, and the log's projections verify.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.providers.docker.provider import LABEL_MANAGED
from sandbox_lifecycle.core import lifecycle as lc
from tests.conftest import DOCKER_IMAGES
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.e2b import API_KEY, fake_env
from tests.support.fixtures.providers import LABEL_DEPLOYMENT, remove_docker_sandboxes
from tests.support.fleet_workers import claim_worker, fleet_worker
from tests.support.session import new_deployment

SANDBOXCTL = str(Path(sys.executable).with_name("sandboxctl"))
# The session-prefixed deployment tests/conftest.py gives each test: what the CLI makes carries it.
KEEP = "SANDBOX_DEPLOYMENT"
PROCESSES, TURNS, LIMIT = 8, 2, 3
WAIT_MS = 4000


def _clean_env() -> dict[str, str]:
    dropped = ("SANDBOX_", "S3_", "E2B_", "NODE_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped) or k == KEEP}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeE2B]:
    server = FakeE2B(API_KEY, tmp_path / "e2b")
    server.start()
    yield server
    server.stop()


def e2b_fleet(fake: FakeE2B, db_url: str, tmp_path: Path) -> tuple[dict[str, str], Callable[[], int]]:
    env = _clean_env()
    env.update(fake_env(fake))
    env.update(SANDBOX_PROVIDER="e2b", SANDBOX_DATABASE_URL=db_url, SANDBOX_DATA_DIR=str(tmp_path / "data"))
    return env, lambda: sum(1 for s in fake.sandboxes() if s.state == "running")


def docker_fleet(
    client: Any, deployment: str, db_url: str, tmp_path: Path
) -> tuple[dict[str, str], Callable[[], int]]:
    env = _clean_env()
    env.update(
        SANDBOX_PROVIDER="docker",
        SANDBOX_DATABASE_URL=db_url,
        SANDBOX_DATA_DIR=str(tmp_path / "data"),
        SANDBOX_DEPLOYMENT=deployment,
        SANDBOX_DISK_LIMIT_MB="0",
        SANDBOX_DOCKER_IMAGE=DOCKER_IMAGES["data-app"],
        SANDBOX_AI_WRITEBACK_DOCKER_IMAGE=DOCKER_IMAGES["ai-writeback"],
    )
    # Every container of the deployment, started or not: any of them holds (or is taking) compute.
    # The low-level listing: one request, no inspect per container (which races the removals).
    # Sandboxes only: the deployment's egress container and port forwarders carry its label too.
    label = {"label": [f"{LABEL_DEPLOYMENT}={deployment}", f"{LABEL_MANAGED}=1"]}
    return env, lambda: len(client.api.containers(all=True, filters=label))


def run_fleet(env: dict[str, str], sample: Callable[[], int]) -> tuple[list[tuple[str, float]], list[int]]:
    env = {**env, "SANDBOX_MAX_LIVE": str(LIMIT), "SANDBOX_CAPACITY_WAIT_MS": str(WAIT_MS)}
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=fleet_worker, args=(env, f"conv-{i}-{uuid.uuid4().hex[:6]}", TURNS, barrier, results)
        )
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    samples: list[int] = []
    outcomes: list[tuple[str, float]] = []
    try:
        barrier.wait(timeout=180)
        give_up = time.monotonic() + 300
        while len(outcomes) < PROCESSES * TURNS and time.monotonic() < give_up:
            samples.append(sample())
            while not results.empty() and len(outcomes) < PROCESSES * TURNS:
                outcomes.append(results.get(timeout=5))
            if results.empty() and not any(p.is_alive() for p in procs):
                break  # a worker that died early reported an error: the check below names it
            time.sleep(0.02)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return outcomes, samples


def check(outcomes: list[tuple[str, float]], samples: list[int], env: dict[str, str]) -> None:
    assert [o for o in outcomes if o[0] == "error"] == []
    assert len(outcomes) == PROCESSES * TURNS
    assert max(samples) <= LIMIT, f"the provider showed {max(samples)} live instances (limit {LIMIT})"
    assert max(samples) >= 1 and len(samples) > 10
    done = [t for kind, t in outcomes if kind == "done"]
    refused = [t for kind, t in outcomes if kind == "capacity"]
    assert done, "no turn completed"
    # A refusal comes only once the whole wait has passed.
    assert all(t >= WAIT_MS / 1000 for t in refused), refused
    verified = subprocess.run(
        [SANDBOXCTL, "replay", "--verify"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    service = build_service(env)
    assert all(r.state in (lc.SUSPENDED, lc.EXPIRED) for r in service.list())


@pytest.mark.postgres
@pytest.mark.slow
def test_e2b_fleet_never_exceeds_max_live(fake: FakeE2B, clean_pg_url: str, tmp_path: Path) -> None:
    env, sample = e2b_fleet(fake, clean_pg_url, tmp_path)
    outcomes, samples = run_fleet(env, sample)
    check(outcomes, samples, env)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.docker
def test_docker_fleet_never_exceeds_max_live(docker_engine: Any, clean_pg_url: str, tmp_path: Path) -> None:
    deployment = new_deployment("cap")
    env, sample = docker_fleet(docker_engine, deployment, clean_pg_url, tmp_path)
    try:
        outcomes, samples = run_fleet(env, sample)
        check(outcomes, samples, env)
    finally:
        remove_docker_sandboxes(docker_engine, deployments=[deployment])


@pytest.mark.postgres
@pytest.mark.slow
def test_processes_racing_for_the_warm_pool_never_claim_one_sandbox_twice(
    fake: FakeE2B, clean_pg_url: str, tmp_path: Path
) -> None:
    env, _ = e2b_fleet(fake, clean_pg_url, tmp_path)
    env["SANDBOX_WARM_POOL_DATA_APP"] = "3"
    service = build_service(env)
    service.maintain_pools()
    pooled = {r.id for r in service.list(lc.IDLE)}
    assert len(pooled) == 3
    racers = 6
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(racers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=claim_worker, args=(env, f"conv-{i}", barrier, results)) for i in range(racers)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    ids = [sid for _, sid in outcomes]
    assert len(set(ids)) == racers
    claims = [h for sid in pooled for h in service.history(sid) if h.type == "Claimed"]
    # Each pooled sandbox was claimed at most once, and no conversation claimed two.
    conversations = [c.data["conversation_id"] for c in claims]
    assert len(conversations) == len(set(conversations)) <= 3
    for sid in pooled & set(ids):
        assert [h.type for h in service.history(sid)].count("Claimed") == 1
    assert len(pooled & set(ids)) == 3  # the pool was used
    verified = subprocess.run(
        [SANDBOXCTL, "replay", "--verify"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
