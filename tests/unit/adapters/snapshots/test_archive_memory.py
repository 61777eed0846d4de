"""Pack + put of a large workspace must stream: peak memory stays far below the workspace size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]

# Runs in a fresh interpreter so ru_maxrss (a process-lifetime peak) measures only this snapshot.
CHILD = r"""
import json, os, resource, sys, tarfile
from sandbox_lifecycle.adapters.snapshots.archive import pack_workspace
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.kinds import kind_spec

SPEC = kind_spec("data-app").workspace
CHUNK = 2 << 20  # docker-py's get_archive chunk size
TEXT = (b"export const value = 42; // a line of ordinary source code\n" * 40000)[:CHUNK]

def header(name, size=0, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o644
    return info.tobuf(tarfile.PAX_FORMAT)

def docker_stream(total, file_size=8 << 20):
    yield header("sandbox", kind=tarfile.DIRTYPE) + header("sandbox/app", kind=tarfile.DIRTYPE)
    for i in range(total // file_size):
        yield header(f"sandbox/app/f{i}.bin", file_size)
        for j in range(file_size // CHUNK):
            # Half incompressible, half source-like, so both compressor paths carry weight.
            yield os.urandom(CHUNK) if j % 2 else TEXT
    yield b"\0" * 1024

def maxrss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

store = LocalSnapshotStore(sys.argv[1])
store.put("warmup.tar.zst", pack_workspace(docker_stream(16 << 20), SPEC))
before = maxrss_kib()
info = store.put("snapshots/big/1.tar.zst", pack_workspace(docker_stream(int(sys.argv[2])), SPEC))
print(json.dumps({"growth_kib": maxrss_kib() - before, "bytes": info.bytes}))
"""


@pytest.mark.slow
def test_pack_and_put_of_200_mb_keeps_memory_growth_small(tmp_path: Path) -> None:
    total = 200 << 20
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(total)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    stored = tmp_path / "snapshots/big/1.tar.zst"
    assert stored.stat().st_size == result["bytes"]
    # Half the input is random, so the archive is > 100 MB: holding it whole would blow this bound.
    assert result["bytes"] > 100 << 20
    assert result["growth_kib"] < 64 * 1024, result
