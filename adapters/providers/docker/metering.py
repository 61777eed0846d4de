"""What a Docker (or gVisor) sandbox used during one run, and which image version a kind's sandboxes get.

A run is one container: created for a create or a resume, removed by the suspend or destroy that ends
it. Its numbers come from where each is kept:

* CPU seconds and peak memory: the engine's stats of the container (one sample, ``one-shot``, read
  before the container is removed). CPU is the cgroup's total usage since the container started. Peak
  memory is the cgroup's high-water mark (``max_usage``), which the engine reports on cgroup v1 hosts
  only: on cgroup v2 it is None (the v2 stats carry no peak; reading ``memory.peak`` would need the
  host's cgroup filesystem, which a backend in a container does not see).
* Bytes in and out, model calls, tokens and statuses: the egress point's counters in the shared state
  directory (adapters/egress/bookkeeping.py), less what they held when the run's container started.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox_lifecycle.adapters.egress.bookkeeping import run_usage
from sandbox_lifecycle.core.usage import Usage

log = logging.getLogger("sandbox_lifecycle.docker")

_FRACTION = re.compile(r"\.(\d{6})\d*")


def measure(api: Any, state_dir: str, sandbox_id: str, ref: str, inspected: dict[str, Any]) -> Usage:
    """The run of container ``ref`` (inspected as ``inspected``, already checked to be the sandbox's)."""
    try:
        stats = api.stats(ref, stream=False, one_shot=True) or {}
    except Exception as exc:  # the engine's numbers are lost, the egress point's are not
        log.warning("could not read the stats of sandbox %s: %s: %s", sandbox_id, type(exc).__name__, exc)
        stats = {}
    counts = run_usage(Path(state_dir), sandbox_id)
    return Usage(
        since=started_at(inspected),
        cpu_seconds=cpu_seconds(stats),
        memory_peak_bytes=memory_peak(stats),
        egress_bytes_in=counts["bytes_in"],
        egress_bytes_out=counts["bytes_out"],
        model_requests=counts["requests"],
        model_input_tokens=counts["input_tokens"],
        model_output_tokens=counts["output_tokens"],
        model_statuses=counts["status"],
    )


def cpu_seconds(stats: dict[str, Any]) -> float | None:
    """The container's CPU time (user and system, every core), from its stats; None if not given."""
    total = _number((stats.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage"))
    return None if total is None else total / 1e9


def memory_peak(stats: dict[str, Any]) -> int | None:
    """The cgroup's memory high-water mark in bytes (cgroup v1's ``max_usage``); None when not reported."""
    found = _number((stats.get("memory_stats") or {}).get("max_usage"))
    return None if found is None or found <= 0 else int(found)


def started_at(inspected: dict[str, Any]) -> datetime | None:
    """When the container started (the run's start), from the engine's nanosecond timestamp."""
    text = str((inspected.get("State") or {}).get("StartedAt") or "")
    if not text or text.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r".\1", text))  # "Z" is read since 3.11
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def image_version(api: Any, image: str) -> str | None:
    """The ID of the image ``image`` names now (a rebuild or a retag gives another); None if absent."""
    import docker.errors  # why: the SDK, loaded with the client that calls this; never on the exec path

    try:
        found = api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return None
    ident = found.get("Id") if isinstance(found, dict) else None
    return ident if isinstance(ident, str) and ident else None


def _number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value
