"""Warm pools and capacity on Docker, side by side in one run.

    .venv/bin/python bench/capacity_bench.py [--rounds 5]

1. First turn of a new conversation: ``turn()`` entered -> first ``exec(["true"])`` returned, with a
   warm pool (SANDBOX_WARM_POOL_DATA_APP=1, refilled between rounds, not timed) and without (the turn
   creates its container). Goal: median <= 60 ms with the pool. The floor beside them: the same on a
   conversation whose sandbox is already idle (no claim, no create), i.e. what the exec itself costs here.
2. A turn at capacity (SANDBOX_MAX_LIVE=1, one idle sandbox holding the slot): the turn suspends the idle
   one first, then creates its own. Compared with a turn that has room (same work, no suspend) and with
   a plain suspend of an idle sandbox, interleaved round by round: the cost capacity adds, (turn at
   capacity - turn with room), over the suspend time. Goal: <= 1.10.

Each service has its own SQLite log and deployment; every container made is destroyed at the end.
Needs the Docker engine and the local images (scripts/start-docker.sh).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.service import SandboxService


@contextmanager
def docker_service(**extra: str) -> Iterator[SandboxService]:
    with tempfile.TemporaryDirectory(prefix="capacity-bench-") as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "E2B_"))},
            "SANDBOX_PROVIDER": "docker",
            "SANDBOX_DATA_DIR": tmp,
            "SANDBOX_DEPLOYMENT": f"bench-{uuid.uuid4().hex[:6]}",
            "SANDBOX_DISK_LIMIT_MB": "0",
            **extra,
        }
        service = build_service(env)
        try:
            yield service
        finally:
            service.pools.settle()
            # Every container goes, even if one destroy fails.
            service.capacity = Capacity()
            for row in service.list():
                if row.state != lc.EXPIRED:
                    try:
                        service.destroy(row.id)
                    except Exception as exc:
                        print(f"cleanup: destroying {row.id} failed: {exc}")


def first_exec_ms(service: SandboxService, conversation: str | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    with service.turn(conversation or f"conv-{uuid.uuid4().hex[:8]}", "data-app", keep_warm=True) as sbx:
        sbx.exec(["true"], check=True)
        took = (time.perf_counter() - started) * 1000
    return took, sbx.id


def warm_pool_rounds(rounds: int) -> tuple[list[float], list[float], list[float]]:
    pooled: list[float] = []
    cold: list[float] = []
    floor: list[float] = []
    with docker_service(SANDBOX_WARM_POOL_DATA_APP="1") as warm, docker_service() as plain:
        warm.maintain_pools()
        first_exec_ms(plain, "floor")
        for _ in range(rounds):
            floor.append(first_exec_ms(plain, "floor")[0])
            took, sid = first_exec_ms(warm)
            pooled.append(took)
            warm.pools.settle()  # the background refill, not timed
            warm.maintain_pools()
            warm.destroy(sid)
            took, sid = first_exec_ms(plain)
            cold.append(took)
            plain.destroy(sid)
    return pooled, cold, floor


def capacity_rounds(rounds: int) -> tuple[list[float], list[float], list[float]]:
    at_capacity: list[float] = []
    with_room: list[float] = []
    suspends: list[float] = []
    with docker_service() as full, docker_service() as roomy:
        # The ceiling is set on the service: SANDBOX_MAX_LIVE=1, a short wait (an idle one is always there).
        full.capacity = Capacity(max_live=1, wait=timedelta(seconds=30))
        for _ in range(rounds):
            # The slot is held by an idle sandbox, settled for longer than eviction's grace.
            _, holder = first_exec_ms(full)
            time.sleep(1.1)
            took, sid = first_exec_ms(full)
            at_capacity.append(took)
            assert full.get(holder).state == lc.SUSPENDED
            full.destroy(holder)
            full.destroy(sid)

            took, sid = first_exec_ms(roomy)
            with_room.append(took)
            started = time.perf_counter()
            roomy.suspend(sid)
            suspends.append((time.perf_counter() - started) * 1000)
            roomy.destroy(sid)
    return at_capacity, with_room, suspends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    med = statistics.median

    pooled, cold, floor = warm_pool_rounds(args.rounds)
    print(f"first turn -> first exec, warm pool:    median {med(pooled):8.1f} ms  (goal <= 60 ms)")
    print(f"first turn -> first exec, no pool:      median {med(cold):8.1f} ms")
    print(f"turn -> exec, sandbox already idle:     median {med(floor):8.1f} ms  (the floor: the exec)")
    print(f"  ratio no pool / pool:                 {med(cold) / med(pooled):8.1f}x")
    print(f"  claim's cost over the floor:          {med(pooled) - med(floor):8.1f} ms")

    full, room, suspend = capacity_rounds(args.rounds)
    added = med(full) - med(room)
    print(f"turn at capacity (suspends idle first): median {med(full):8.1f} ms")
    print(f"turn with room:                         median {med(room):8.1f} ms")
    print(f"suspend of an idle sandbox:             median {med(suspend):8.1f} ms")
    print(f"  added by capacity / suspend time:     {added / med(suspend):8.2f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
