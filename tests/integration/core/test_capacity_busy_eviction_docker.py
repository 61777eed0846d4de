"""Issue N, item 4, as it was reported: ``SANDBOX_MAX_LIVE=2`` on PostgreSQL, six Docker sandboxes, six
concurrent ``sandboxctl exec ID -- sh -c 'sleep 4; echo done'`` processes, twice. Before the leases
8 of 12 came back 137 with no output: an eviction for capacity suspended (removed) their container
while the command ran. Each exec must now either print ``done`` and exit 0 or, if no slot came within
the wait, exit 75 (CapacityExceeded) with a message; never a killed command.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core import lifecycle as lc
from tests.integration.core.test_capacity_fleet import SANDBOXCTL, docker_fleet
from tests.support.fixtures.providers import remove_docker_sandboxes
from tests.support.session import new_deployment

pytestmark = [pytest.mark.postgres, pytest.mark.docker, pytest.mark.slow]

SANDBOXES, LIMIT, ROUNDS = 6, 2, 2
EXIT_CAPACITY = 75


def _ctl(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SANDBOXCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_concurrent_sandboxctl_execs_at_max_live_are_never_killed(
    docker_engine: Any, clean_pg_url: str, tmp_path: Path
) -> None:
    deployment = new_deployment("cx")
    env, live_containers = docker_fleet(docker_engine, deployment, clean_pg_url, tmp_path)
    env["SANDBOX_MAX_LIVE"] = str(LIMIT)
    try:
        ids = []
        for _ in range(SANDBOXES):
            made = _ctl(env, "create", "--kind", "data-app", "--json")
            assert made.returncode == 0, made.stderr
            ids.append(json.loads(made.stdout)["id"])
        outcomes: list[tuple[int, str, str, float]] = []
        for _ in range(ROUNDS):

            def run(sid: str) -> tuple[int, str, str, float]:
                started = time.monotonic()
                done = _ctl(env, "exec", sid, "--", "sh", "-c", "sleep 4; echo done")
                return done.returncode, done.stdout, done.stderr, time.monotonic() - started

            with ThreadPoolExecutor(SANDBOXES) as pool:
                outcomes += list(pool.map(run, ids))
            assert live_containers() <= LIMIT
        killed = [o for o in outcomes if o[0] not in (0, EXIT_CAPACITY)]
        assert killed == [], killed
        for rc, out, err, _ in outcomes:
            if rc == 0:
                assert out == "done\n", err
            else:
                assert "capacity" in err.lower() and err.strip(), err
        assert sum(1 for o in outcomes if o[0] == 0) >= LIMIT * ROUNDS
        service = build_service(env)
        assert len([r for r in service.list() if lc.holds_compute(r.state, r.provider_ref)]) <= LIMIT
        # Every capacity suspend in the log came while no exec held the sandbox: none was killed above.
        verified = _ctl(env, "replay", "--verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        print(
            "exec outcomes:",
            sorted((rc, round(t, 1)) for rc, _, _, t in outcomes),
        )
    finally:
        remove_docker_sandboxes(docker_engine, deployments=[deployment])
