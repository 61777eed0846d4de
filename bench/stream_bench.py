"""Streaming exec output on Docker: ours (SandboxService) side by side with raw docker-py, one run.

    .venv/bin/python bench/stream_bench.py [--rounds 20]

1. line latency: a command prints its clock (`date +%s%N`) mid-run; the time from that print to the
   on_stdout callback (ours) or to the chunk coming out of `exec_run(stream=True)` (raw). Container and
   host share one kernel clock, so the difference is the delivery time.
2. exec round trip of `true`: service.exec vs exec_run, in the same container.
Both sides run in the same container, interleaved round by round. Prints medians and ratios.
Needs scripts/start-docker.sh to have run (engine and local images).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.service import SandboxService

# Print the clock in the middle of the command, so the latency is not the end of the exec.
LINE_CMD = ["sh", "-c", "sleep 0.2; date +%s%N; sleep 0.3"]


def _printed_at(chunk: bytes) -> int | None:
    text = chunk.strip().split(b"\n")[0]
    return int(text) if text.isdigit() else None


def ours_latency(service: SandboxService, sid: str) -> float:
    seen: list[int] = []

    def on_stdout(chunk: bytes) -> None:
        now = time.time_ns()
        printed = _printed_at(chunk)
        if printed is not None and not seen:
            seen.append(now - printed)

    assert service.exec(sid, LINE_CMD, timeout=30, on_stdout=on_stdout).exit_code == 0
    return seen[0] / 1e6


def raw_latency(container: docker.models.containers.Container) -> float:
    result = container.exec_run(LINE_CMD, user="1000:1000", stream=True, demux=True)
    first: int | None = None
    for out, _ in result.output:  # ends with the command (0.5 s)
        now = time.time_ns()
        printed = _printed_at(out) if out else None
        if printed is not None and first is None:
            first = now - printed
    assert first is not None
    return first / 1e6


def ours_round_trip(service: SandboxService, sid: str) -> float:
    t0 = time.perf_counter()
    assert service.exec(sid, ["true"], timeout=30).exit_code == 0
    return (time.perf_counter() - t0) * 1e3


def provider_round_trip(service: SandboxService, ref: str) -> float:
    """The provider alone (its exec wrapper included), without the service's log reads and writes."""
    t0 = time.perf_counter()
    assert service.provider.exec(ref, ["true"], timeout=30).exit_code == 0
    return (time.perf_counter() - t0) * 1e3


def raw_round_trip(container: docker.models.containers.Container) -> float:
    t0 = time.perf_counter()
    assert container.exec_run(["true"], user="1000:1000").exit_code == 0
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "SANDBOX_PROVIDER": "docker",
            "SANDBOX_DATA_DIR": tmp,
            "SANDBOX_DEPLOYMENT": f"bench-{uuid.uuid4().hex[:6]}",
        }
        service = build_service(env)
        row = service.create("data-app")
        try:
            ref = service.get(row.id).provider_ref
            assert ref is not None
            container = client.containers.get(ref)
            # Warm both paths (first exec of a container, imports, connection pools).
            ours_latency(service, row.id), raw_latency(container)
            ours_round_trip(service, row.id), raw_round_trip(container)
            lat_ours, lat_raw, rt_ours, rt_raw, rt_provider = [], [], [], [], []
            for _ in range(args.rounds):  # interleaved: drift in the machine's load hits both alike
                lat_ours.append(ours_latency(service, row.id))
                lat_raw.append(raw_latency(container))
                rt_ours.append(ours_round_trip(service, row.id))
                rt_raw.append(raw_round_trip(container))
                rt_provider.append(provider_round_trip(service, ref))
        finally:
            service.destroy(row.id)
    lo, lr = statistics.median(lat_ours), statistics.median(lat_raw)
    ro, rr = statistics.median(rt_ours), statistics.median(rt_raw)
    rp = statistics.median(rt_provider)
    print(f"medians of {args.rounds} rounds, same container, interleaved")
    rows = [
        ("line printed -> callback", lo, "raw exec_run(stream)", lr),
        ("exec round trip of `true`", ro, "raw exec_run", rr),
        ("  of which the provider", rp, "raw exec_run", rr),
    ]
    for what, ours, raw_name, raw in rows:
        print(f"{what:27} ours {ours:7.2f} ms   {raw_name:20} {raw:7.2f} ms   ratio {ours / raw:5.2f}x")
    p90 = int(0.9 * len(lat_ours))
    print(f"line latency p90: ours {sorted(lat_ours)[p90]:.2f} ms, raw {sorted(lat_raw)[p90]:.2f} ms")


if __name__ == "__main__":
    main()
