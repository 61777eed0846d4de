"""runsc (the gvisor provider) against runc (the docker provider), on the same engine, in one run.

    .venv/bin/python bench/gvisor_bench.py [--rounds 5] [--execs 30] [--mb 100]

The engine (DOCKER_HOST) must have the runsc runtime: scripts/fresh-engine.sh registers it. Measures,
interleaving the two providers so that load from elsewhere hits both alike:

1. create: provider.create of a data-app sandbox (container, home disk, network), median of --rounds;
2. exec round trip of `true` on a running sandbox, median of --execs (goal: runsc <= 1.5x runc);
3. upload_dir of a --mb MB tree of random files (20 files);
4. suspend and resume of a sandbox holding a --mb MB workspace (random bytes), to a local snapshot store.

Prints the medians in milliseconds and the ratio runsc / runc of each, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from sandbox_lifecycle.adapters.composition.settings import EgressSettings
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
from sandbox_lifecycle.adapters.providers.gvisor.runtime import preflight, runtime_status
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP

IMAGES = {
    DATA_APP: os.environ.get("SANDBOX_DOCKER_IMAGE", "lightdash-sandbox:local"),
    AI_WRITEBACK: os.environ.get("SANDBOX_AI_WRITEBACK_DOCKER_IMAGE", "lightdash-ai-writeback:local"),
}
MiB = 1 << 20


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


class Side:
    """One provider and the sandboxes it made (destroyed at the end whatever happens)."""

    def __init__(self, label: str, provider: DockerProvider) -> None:
        self.label, self.provider = label, provider
        self.made: dict[str, str] = {}
        self.times: dict[str, list[float]] = {}

    def new(self) -> tuple[str, str]:
        sandbox_id = f"gvb{uuid.uuid4().hex[:10]}"
        started = time.perf_counter()
        ref = self.provider.create(sandbox_id, DATA_APP)
        self.record("create", (time.perf_counter() - started) * 1000)
        self.made[sandbox_id] = ref
        return sandbox_id, ref

    def record(self, what: str, ms: float) -> None:
        self.times.setdefault(what, []).append(ms)

    def destroy_all(self) -> None:
        for sandbox_id, ref in self.made.items():
            self.provider.destroy(sandbox_id, ref)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--execs", type=int, default=30)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    preflight()
    print(f"runsc: {runtime_status().detail}")

    work = Path(tempfile.mkdtemp(prefix="gvisor-bench-"))
    deployment = f"gvbench-{uuid.uuid4().hex[:6]}"
    store = LocalSnapshotStore(work / "snapshots")
    egress = EgressSettings(state_dir=work / "egress")
    sides = [
        Side(
            "runc", DockerProvider(IMAGES, store, environ={}, deployment=f"{deployment}-runc", egress=egress)
        ),
        Side("runsc", GVisorProvider(IMAGES, store, deployment=f"{deployment}-runsc", egress=egress)),
    ]
    tree = work / "tree"
    tree.mkdir()
    for i in range(20):
        (tree / f"f{i:02}.bin").write_bytes(os.urandom(args.mb * MiB // 20))
    try:
        for _ in range(args.rounds):
            for side in sides:
                sandbox_id, ref = side.new()
                side.provider.destroy(sandbox_id, ref)
                del side.made[sandbox_id]
        running = {side.label: side.new() for side in sides}
        for _ in range(args.execs):
            for side in sides:
                ref = running[side.label][1]
                side.record("exec `true`", timed(partial(side.provider.exec, ref, ["true"], timeout=30)))
        for side in sides:
            ref = running[side.label][1]
            upload = partial(side.provider.upload_dir, ref, str(tree), "up")
            side.record(f"upload_dir {args.mb} MB", timed(upload))
        for side in sides:
            sandbox_id, ref = running[side.label]
            key = f"{sandbox_id}-bench"
            start = time.perf_counter()
            snapshot = side.provider.suspend(sandbox_id, ref, DATA_APP, key)
            side.record(f"suspend {args.mb} MB", (time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            running[side.label] = (sandbox_id, side.provider.resume(sandbox_id, DATA_APP, snapshot))
            side.record(f"resume {args.mb} MB", (time.perf_counter() - start) * 1000)
            side.made[sandbox_id] = running[side.label][1]
            side.provider.delete_snapshot(snapshot)
    finally:
        for side in sides:
            side.destroy_all()
            # The deployment's egress container and networks: nothing of the benchmark outlives it.
            side.provider.remove_unused_network(datetime.now(UTC))
        shutil.rmtree(work, ignore_errors=True)

    runc, runsc = sides
    report = {}
    print(f"\n{'':<22}{'runc ms':>10}{'runsc ms':>10}{'ratio':>8}")
    for what in runc.times:
        a, b = statistics.median(runc.times[what]), statistics.median(runsc.times[what])
        report[what] = {"runc_ms": round(a, 1), "runsc_ms": round(b, 1), "ratio": round(b / a, 2)}
        print(f"{what:<22}{a:>10.1f}{b:>10.1f}{b / a:>7.2f}x")
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
