"""The Docker provider through the service, side by side with raw docker-py, on the local engine.

    .venv/bin/python bench/docker_bench.py [--rounds 10] [--workspace-mb 100] [--big-mb 1024] [--exec-only]

1. create → exec → destroy: ours (SandboxService on the embedded SQLite log) vs the same container
   options driven with docker-py directly. Prints medians and the ratio (target <= 1.15x).
2. suspend and resume of a 100 MB workspace (half text, half random bytes) to an S3 endpoint (a moto
   server this script starts on 127.0.0.1). Prints seconds and MB/s (target <= 2 s each).
3. peak RSS of the backend process during the suspend of a 1 GB workspace, measured in a fresh child
   process: growth over its baseline (target < 100 MB).
4. one exec round trip (`true`) on a running sandbox: DockerProvider.exec and SandboxService.exec vs
   docker-py's exec_run on the same container, interleaved. Prints medians and ratios (target <= 1x for
   the provider). --exec-only runs just this one.
Needs scripts/start-docker.sh to have run (engine and local images).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker
from _fill import memory_mib
from docker.types import Mount
from snapshot_bench import start_moto

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.service import SandboxService

IMAGE = os.environ.get("SANDBOX_DOCKER_IMAGE", "lightdash-sandbox:local")
MiB = 1 << 20


def raw_round(client: docker.DockerClient) -> float:
    """What the provider does, minus our bookkeeping: same image and hardening options."""
    t0 = time.perf_counter()
    name = f"bench-raw-{uuid.uuid4().hex[:12]}"
    labels = {"sandbox-lifecycle.bench": "1"}
    container = client.containers.create(
        IMAGE,
        name=name,
        labels=labels,
        user="1000:1000",
        working_dir="/home/sandbox/app",
        environment={"HOME": "/home/sandbox"},
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        pids_limit=512,
        mem_limit=2 * 1024**3,
        memswap_limit=2 * 1024**3,
        nano_cpus=1_000_000_000,
        ipc_mode="private",
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=256m"},
        mounts=[Mount(target="/home/sandbox", source=None, type="volume", labels=labels)],
        init=True,
    )
    container.start()
    result = container.exec_run(["true"], user="1000:1000")
    assert result.exit_code == 0
    container.remove(force=True, v=True)
    return time.perf_counter() - t0


def ours_round(service: SandboxService) -> float:
    t0 = time.perf_counter()
    row = service.create("data-app")
    assert service.exec(row.id, ["true"]).exit_code == 0
    service.destroy(row.id)
    return time.perf_counter() - t0


def lifecycle(rounds: int, env: dict[str, str]) -> None:
    client = docker.from_env()
    service = build_service(env)
    ours_round(service), raw_round(client)  # warm caches on both sides
    ours, raw = [], []
    for _ in range(rounds):  # interleaved, so drift in the machine's load hits both alike
        ours.append(ours_round(service))
        raw.append(raw_round(client))
    mo, mr = statistics.median(ours), statistics.median(raw)
    print(
        f"create→exec→destroy, median of {rounds}: ours {mo * 1000:.0f} ms, "
        f"raw docker-py {mr * 1000:.0f} ms, ratio {mo / mr:.2f}x (target <= 1.15x)"
    )


def exec_roundtrip(rounds: int, env: dict[str, str]) -> None:
    client = docker.from_env()
    service = build_service(env)
    provider: Any = service.provider
    row = service.create("data-app")
    try:
        ref = service.get(row.id).provider_ref
        assert ref is not None
        container = client.containers.get(ref)
        runs: dict[str, list[float]] = {"provider": [], "service": [], "raw": []}
        calls = {
            "provider": lambda: provider.exec(ref, ["true"], timeout=30).exit_code,
            "service": lambda: service.exec(row.id, ["true"], timeout=30).exit_code,
            "raw": lambda: container.exec_run(["true"], user="1000:1000").exit_code,
        }
        for call in calls.values():  # warm caches on every side
            assert call() == 0
        for _ in range(rounds):  # interleaved, so drift in the machine's load hits all alike
            for name, call in calls.items():
                t0 = time.perf_counter()
                assert call() == 0
                runs[name].append(time.perf_counter() - t0)
        med = {name: statistics.median(times) * 1000 for name, times in runs.items()}
        low = {name: min(times) * 1000 for name, times in runs.items()}
        print(
            f"exec `true` round trip, median (min) of {rounds}: provider {med['provider']:.1f} "
            f"({low['provider']:.1f}) ms, service {med['service']:.1f} ({low['service']:.1f}) ms, "
            f"raw docker-py exec_run {med['raw']:.1f} ({low['raw']:.1f}) ms; provider/raw "
            f"{med['provider'] / med['raw']:.2f}x, service/raw {med['service'] / med['raw']:.2f}x"
        )
    finally:
        service.destroy(row.id)
        # The deployment's egress container goes with its last sandbox network.
        provider.remove_unused_network(datetime.now(UTC))
        shutil.rmtree(provider.network.state_dir, ignore_errors=True)


def fill(service: SandboxService, sandbox_id: str, mb: int) -> None:
    """Half random bytes, half text, written inside the container (in the snapshotted app dir)."""
    half = mb // 2
    script = (
        f"head -c {half}M /dev/urandom > random.bin && "
        f"yes 'select customer_id, sum(amount) from orders group by 1 -- revenue by customer' "
        f"| head -c {mb - half}M > queries.sql && du -sm ."
    )
    result = service.exec(sandbox_id, ["sh", "-c", script], timeout=600)
    assert result.exit_code == 0, result.stderr


def suspend_resume(env: dict[str, str], mb: int) -> None:
    service = build_service(env)
    row = service.create("data-app")
    try:
        fill(service, row.id, mb)
        t0 = time.perf_counter()
        suspended = service.suspend(row.id)
        t1 = time.perf_counter()
        service.resume(row.id)
        t2 = time.perf_counter()
        stored = (suspended.snapshot_bytes or 0) / MiB
        print(
            f"suspend of a {mb} MB workspace to S3: {t1 - t0:.2f} s ({mb / (t1 - t0):.0f} MB/s, "
            f"{stored:.0f} MiB stored); resume: {t2 - t1:.2f} s ({mb / (t2 - t1):.0f} MB/s) "
            "(target <= 2 s each)"
        )
        check = service.exec(row.id, ["sh", "-c", "du -sm random.bin queries.sql"]).stdout.split()
        assert check[0] == str(mb // 2), check
    finally:
        service.destroy(row.id)


def rss_child(env_json: str, mb: int) -> None:
    env = json.loads(env_json)
    service = build_service(env)
    row = service.create("data-app")
    try:
        fill(service, row.id, mb)
        service.touch(row.id)
        baseline, _ = memory_mib()
        t0 = time.perf_counter()
        service.suspend(row.id)
        elapsed = time.perf_counter() - t0
        _, peak = memory_mib()
        print(json.dumps({"baseline": baseline, "peak": peak, "seconds": elapsed}))
    finally:
        service.destroy(row.id)


def peak_rss(env: dict[str, str], mb: int) -> None:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", json.dumps(env), "--big-mb", str(mb)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"suspend of a {mb} MB workspace: {r['seconds']:.1f} s; backend RSS {r['baseline']:.0f} MiB before, "
        f"peak {r['peak']:.0f} MiB: +{r['peak'] - r['baseline']:.0f} MiB (target < 100 MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workspace-mb", type=int, default=100)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--exec-only", action="store_true", help="only the exec round trip (4.)")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.big_mb)
        return
    if args.exec_only:
        with tempfile.TemporaryDirectory() as tmp:
            exec_roundtrip(
                args.rounds,
                {
                    **os.environ,
                    "SANDBOX_PROVIDER": "docker",
                    "SANDBOX_DATA_DIR": tmp,
                    "SANDBOX_DEPLOYMENT": f"bench-{uuid.uuid4().hex[:6]}",
                },
            )
        return
    moto, endpoint = start_moto()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = {
                **os.environ,
                "SANDBOX_PROVIDER": "docker",
                "SANDBOX_DATA_DIR": tmp,
                "SANDBOX_DEPLOYMENT": f"bench-{uuid.uuid4().hex[:6]}",
            }
            lifecycle(args.rounds, base)
            s3 = {
                **base,
                "S3_ENDPOINT": endpoint,
                "S3_REGION": "us-east-1",
                "S3_ACCESS_KEY": "bench",
                "S3_SECRET_KEY": "bench",
                "S3_BUCKET": "bench",
            }
            suspend_resume(s3, args.workspace_mb)
            peak_rss(s3, args.big_mb)
    finally:
        moto.terminate()
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
