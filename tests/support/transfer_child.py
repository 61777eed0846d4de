"""Runs in a child process: one upload_dir and one download_dir of a big tree, reporting the peak RSS.

A child of its own so that VmHWM (the process's peak resident set) measures the backend's side of the
transfer alone: the test process also holds the loopback E2B server and pytest. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def _hwm_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _provider(config: dict[str, Any]) -> Any:
    if config["provider"] == "docker":
        import docker

        from tests.support.fixtures.providers import docker_provider

        return docker_provider(docker.from_env(), config["snapshot_dir"], config["deployment"])
    import dataclasses

    from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings

    settings = E2BSettings.from_env(config["env"])
    return E2BProvider(dataclasses.replace(settings, request_timeout=60.0), deployment=config["deployment"])


def main() -> None:
    config = json.loads(sys.argv[1])
    provider = _provider(config)
    ref = config["ref"]
    # Warm up every code path (SDK clients, connections, tar modules) before the baseline.
    provider.exists(ref, "warm-up")
    baseline = _hwm_kib()
    started = time.monotonic()
    up = provider.upload_dir(ref, config["src"], config["remote"])
    uploaded = time.monotonic()
    after_up = _hwm_kib()
    down = provider.download_dir(ref, config["remote"], config["dst"])
    downloaded = time.monotonic()
    print(
        json.dumps(
            {
                "baseline_kib": baseline,
                "after_upload_kib": after_up,
                "after_download_kib": _hwm_kib(),
                "upload_s": uploaded - started,
                "download_s": downloaded - uploaded,
                "up": [up.files, up.bytes, list(up.skipped)],
                "down": [down.files, down.bytes, list(down.skipped)],
            }
        )
    )


if __name__ == "__main__":
    main()
