"""Directory transfer throughput on the Docker provider: upload_dir and download_dir of a tree.

    .venv/bin/python bench/dir_bench.py [--mb 100] [--files 100] [--runs 3] [--profile up|down]

Makes a tree of ``--files`` random files totalling ``--mb`` MB, creates one data-app container (the
local images, default disk limit), and times each direction ``--runs`` times (the median is reported),
with the reference of the engine's own ``docker cp`` of the same tree both ways. Removes the container.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.kinds import DATA_APP

IMAGES = {
    "data-app": os.environ.get("SANDBOX_DOCKER_IMAGE", "lightdash-sandbox:local"),
    "ai-writeback": os.environ.get("SANDBOX_AI_WRITEBACK_DOCKER_IMAGE", "lightdash-ai-writeback:local"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", choices=["up", "down"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dir-bench-"))
    src = work / "src"
    per_file = args.mb * 1_000_000 // args.files
    for i in range(args.files):
        (src / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 10}" / f"f{i:04}.bin").write_bytes(os.urandom(per_file))
    deployment = "bench" + uuid.uuid4().hex[:6]
    client = docker.from_env()
    provider = DockerProvider(
        IMAGES, LocalSnapshotStore(work / "snapshots"), client=client, environ={}, deployment=deployment
    )
    sid = "bench" + uuid.uuid4().hex[:10]
    ref = provider.create(sid, DATA_APP)
    try:
        provider.exists(ref, "warm-up")
        up_s, down_s = [], []
        for run in range(args.runs):
            remote = f"bench{run}"
            profiler = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            if profiler and args.profile == "up":
                profiler.enable()
            provider.upload_dir(ref, str(src), remote)
            if profiler:
                profiler.disable()
            up_s.append(time.perf_counter() - started)
            dst = work / f"dst{run}"
            started = time.perf_counter()
            if profiler and args.profile == "down":
                profiler.enable()
            provider.download_dir(ref, remote, str(dst))
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)
            down_s.append(time.perf_counter() - started)
            shutil.rmtree(dst)
            provider.remove(ref, remote)
        ref_up, ref_down = _docker_cp(ref, src, work)
        mb = per_file * args.files / 1e6
        print(f"{args.mb} MB in {args.files} files, median of {args.runs}:")
        up, down = mb / statistics.median(up_s), mb / statistics.median(down_s)
        print(f"  upload_dir    {up:7.0f} MB/s  (docker cp in: {mb / ref_up:.0f} MB/s)")
        print(f"  download_dir  {down:7.0f} MB/s  (docker cp out: {mb / ref_down:.0f} MB/s)")
    finally:
        provider.destroy(sid, ref)
        shutil.rmtree(work, ignore_errors=True)


def _docker_cp(ref: str, src: Path, work: Path) -> tuple[float, float]:
    """The engine's own copy both ways, as a reference for what the socket and the daemon allow."""
    started = time.perf_counter()
    subprocess.run(["docker", "cp", f"{src}/.", f"{ref}:/home/sandbox/app/ref"], check=True, timeout=600)
    up = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(
        ["docker", "cp", f"{ref}:/home/sandbox/app/ref", str(work / "ref")], check=True, timeout=600
    )
    return up, time.perf_counter() - started


if __name__ == "__main__":
    main()
