"""A 100 MB directory (100 files of 1 MB random) both ways, on Docker and on the loopback E2B server.

The sha256 of every file must come back the same, and the backend's peak RSS (VmHWM of a child process
that does only the transfer) may grow by a small fraction of the data: the tree streams through a few
1 MiB chunks, it is never held whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.core.kinds import DATA_APP
from tests.support.fixtures.e2b import fake_env
from tests.support.fixtures.providers import (
    docker_provider,
    e2b_provider,
    new_deployment,
    new_sandbox_id,
    remove_docker_sandboxes,
)

pytestmark = pytest.mark.slow

FILES, FILE_BYTES = 100, 1 << 20
# Peak RSS growth allowed for moving 100 MiB each way: well under the data, generous for allocator noise.
MAX_GROWTH_KIB = 32 * 1024
REPO = Path(__file__).resolve().parents[4]


def _sha256s(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _make_tree(root: Path) -> None:
    for i in range(FILES):
        sub = root / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03}.bin").write_bytes(os.urandom(FILE_BYTES))


def _run_child(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.transfer_child", json.dumps(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _check(result: dict[str, Any], src: Path, dst: Path, name: str) -> None:
    total = FILES * FILE_BYTES
    assert result["up"] == [FILES, total, []]
    assert result["down"] == [FILES, total, []]
    assert _sha256s(dst) == _sha256s(src)
    growth = result["after_download_kib"] - result["baseline_kib"]
    mb = total / 1e6
    up, down = mb / result["upload_s"], mb / result["download_s"]
    print(
        f"\n{name}: upload {up:.0f} MB/s, download {down:.0f} MB/s, "
        f"peak RSS growth {growth / 1024:.1f} MiB (baseline {result['baseline_kib'] / 1024:.0f} MiB)"
    )
    assert growth < MAX_GROWTH_KIB, f"peak RSS grew by {growth} KiB moving {total} bytes each way"


@pytest.mark.docker
def test_100_mb_directory_both_ways_on_docker(docker_client: Any, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_tree(src)
    deployment = new_deployment()
    provider = docker_provider(docker_client, tmp_path / "snapshots", deployment)
    try:
        ref = provider.create(new_sandbox_id(), DATA_APP)
        config = {
            "provider": "docker",
            "deployment": deployment,
            "snapshot_dir": str(tmp_path / "snapshots"),
            "ref": ref,
            "src": str(src),
            "dst": str(dst),
            "remote": "big",
        }
        _check(_run_child(config), src, dst, "docker")
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])


def test_100_mb_directory_both_ways_on_e2b(fake_e2b: Any, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_tree(src)
    deployment = new_deployment()
    ref = e2b_provider(fake_e2b, deployment).create(new_sandbox_id(), DATA_APP)
    config = {
        "provider": "e2b",
        "deployment": deployment,
        "env": fake_env(fake_e2b),
        "ref": ref,
        "src": str(src),
        "dst": str(dst),
        "remote": "big",
    }
    _check(_run_child(config), src, dst, "e2b (loopback)")
    # The staged tar files are gone from the sandbox's home.
    home = fake_e2b.sandbox(ref).root / "home" / "sandbox"
    assert not [p.name for p in home.iterdir() if p.name.startswith(".sandbox-lifecycle-")]
