"""The service's own work on an exec: ``service.exec(id, ["true"])`` beside the provider alone, on Docker.

    .venv/bin/python bench/service_exec_bench.py [--rounds 40] [--history 1500]

One exec of ``true`` on a running sandbox, three ways, interleaved round by round so drift in the
machine's load hits all alike: through the service (read the record, coalesced activity, the heartbeat,
and with a capacity limit the lease that keeps the sandbox from being evicted under the call), the
provider alone (``service.provider.exec``, the same wrapper), and docker-py's ``exec_run``. Three set-ups,
each with its own SQLite log and sandbox:

* ``default``: no capacity limit, a fresh sandbox (a handful of events);
* ``max-live``: ``SANDBOX_MAX_LIVE`` set, so every exec takes and releases a lease;
* ``long history``: ``max-live`` on a sandbox whose stream holds ``--history`` activity events (a day of
  coalesced activity is about 1,440).

Prints the medians and the ratio service / provider (goal <= 1.10x). Needs the Docker engine and the
local images (scripts/start-docker.sh).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import docker

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core import sandbox as sb


def _timed(call: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    assert call() == 0
    return (time.perf_counter() - t0) * 1e3


def measure(name: str, rounds: int, history: int, extra: dict[str, str]) -> None:
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="service-exec-bench-") as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "E2B_"))},
            "SANDBOX_PROVIDER": "docker",
            "SANDBOX_DATA_DIR": tmp,
            "SANDBOX_DEPLOYMENT": f"bench-{uuid.uuid4().hex[:6]}",
            **extra,
        }
        service = build_service(env)
        provider: Any = service.provider
        row = service.create("data-app")
        try:
            for _ in range(history):  # the coalesced activity of a long-lived sandbox, one event each
                service.kernel.run(row.id, lambda s: sb.Touch(window=timedelta(0), actor="bench"))
            ref = service.get(row.id).provider_ref
            assert ref is not None
            container = client.containers.get(ref)
            calls: dict[str, Callable[[], int]] = {
                "service": lambda: service.exec(row.id, ["true"], timeout=30).exit_code,
                "provider": lambda: provider.exec(ref, ["true"], timeout=30).exit_code,
                "raw": lambda: container.exec_run(["true"], user="1000:1000").exit_code,
            }
            for call in calls.values():  # warm every path (first exec, connection pools)
                _timed(call)
            runs: dict[str, list[float]] = {what: [] for what in calls}
            order = list(calls)
            for n in range(rounds):
                # Interleaved, and each way first in turn: the first exec after a pause pays for waking up.
                for what in order[n % 3 :] + order[: n % 3]:
                    runs[what].append(_timed(calls[what]))
            events = len(service.store.read_stream(row.id))
        finally:
            service.destroy(row.id)
            provider.remove_unused_network(datetime.now(UTC))
    med = {what: statistics.median(times) for what, times in runs.items()}
    print(
        f"{name:13} {events:5} events   service {med['service']:6.1f} ms   provider {med['provider']:6.1f} ms"
        f"   raw {med['raw']:6.1f} ms   service/provider {med['service'] / med['provider']:4.2f}x"
        f"   service/raw {med['service'] / med['raw']:4.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--history", type=int, default=1500)
    args = parser.parse_args()
    print(f"exec of `true`, medians of {args.rounds} interleaved rounds (load {os.getloadavg()[0]:.1f})")
    measure("default", args.rounds, 0, {})
    measure("max-live", args.rounds, 0, {"SANDBOX_MAX_LIVE": "50"})
    measure("long history", args.rounds, args.history, {"SANDBOX_MAX_LIVE": "50"})


if __name__ == "__main__":
    main()
