"""Snapshot throughput and memory, against a moto S3 server this script starts on 127.0.0.1.

    .venv/bin/python bench/snapshot_bench.py [--workspace-mb 100] [--big-mb 1024]

Measures, for a synthetic workspace shaped like docker's get_archive output (text sources plus random
binaries): pack+put and fetch_verified+restore, on S3 (moto over HTTP) and the local store; then the
peak RSS growth of this process while a generated ``--big-mb`` stream is packed and put to S3.
The workspace is generated up front so the timings exclude generation; the big stream never is held.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox_lifecycle.adapters.snapshots.archive import fetch_verified, pack_workspace, restore_stream
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import SnapshotStore

SPEC = kind_spec("data-app").workspace
MiB = 1 << 20
DOCKER_CHUNK = 2 * MiB  # docker-py's get_archive chunk size
WORDS = [
    "select",
    "from",
    "where",
    "user",
    "order",
    "amount",
    "revenue",
    "customer",
    "date",
    "sum",
    "count",
    "group",
    "join",
    "left",
]


def _header(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, 0o644, 1_700_000_000
    info.uid = info.gid = 1000
    return info.tobuf(tarfile.PAX_FORMAT)


def _member(name: str, data: bytes) -> Iterator[bytes]:
    yield _header(name, len(data))
    yield data
    yield b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _source_text(rng: random.Random, size: int) -> bytes:
    lines = []
    total = 0
    while total < size:
        line = (
            f"export const {rng.choice(WORDS)}{rng.randrange(10**6)} = query('{rng.choice(WORDS)}', "
            f"{rng.randrange(10**4)}, {rng.random():.6f}); // {' '.join(rng.choices(WORDS, k=6))}\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def workspace(total: int, seed: int = 7) -> list[bytes]:
    """~60% (by bytes) source-like text in small files, the rest random bytes in larger ones."""
    rng = random.Random(seed)
    pieces: list[bytes] = [
        _header("sandbox", kind=tarfile.DIRTYPE),
        _header("sandbox/app", kind=tarfile.DIRTYPE),
    ]
    text_bytes = 0
    size = 0
    i = 0
    while size < total:
        if text_bytes < 0.6 * size or size == 0:
            data = _source_text(rng, rng.randrange(4_000, 200_000))
            name = f"sandbox/app/src/m{i}.ts"
            text_bytes += len(data)
        else:
            data = rng.randbytes(rng.randrange(MiB, 8 * MiB))
            name = f"sandbox/app/assets/b{i}.bin"
        pieces.extend(_member(name, data))
        size += len(data)
        i += 1
    pieces.append(b"\0" * 1024)
    blob = b"".join(pieces)
    return [blob[o : o + DOCKER_CHUNK] for o in range(0, len(blob), DOCKER_CHUNK)]


def generated(total: int) -> Iterator[bytes]:
    """A ``total``-byte workspace produced on the fly: half random, half text (reused, never stored)."""
    text = _source_text(random.Random(1), DOCKER_CHUNK)
    file_size = 64 * MiB
    yield _header("sandbox", kind=tarfile.DIRTYPE) + _header("sandbox/app", kind=tarfile.DIRTYPE)
    for i in range(total // file_size):
        yield _header(f"sandbox/app/f{i}.bin", file_size)
        for j in range(file_size // DOCKER_CHUNK):
            yield os.urandom(DOCKER_CHUNK) if j % 2 else text
    yield b"\0" * 1024


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)


def measure(label: str, store: SnapshotStore, chunks: list[bytes], size: int) -> None:
    mb = size / MiB
    t0 = time.perf_counter()
    info = store.put(f"snapshots/bench/{label}.tar.zst", pack_workspace(iter(chunks), SPEC))
    t1 = time.perf_counter()
    restored = 0
    with fetch_verified(store, info) as f:
        for chunk in restore_stream(f, SPEC):
            restored += len(chunk)
    t2 = time.perf_counter()
    stored = info.bytes or 0
    ratio = size / max(stored, 1)
    print(
        f"{label:>5}  pack+put            {t1 - t0:6.2f} s  {mb / (t1 - t0):7.1f} MB/s  "
        f"(archive {stored / MiB:.1f} MiB, ratio {ratio:.2f})"
    )
    print(
        f"{label:>5}  fetch_verified+restore {t2 - t1:3.2f} s  {mb / (t2 - t1):7.1f} MB/s  "
        f"(tar out {restored / MiB:.1f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace-mb", type=int, default=100)
    parser.add_argument("--big-mb", type=int, default=1024)
    args = parser.parse_args()

    moto, endpoint = start_moto()
    try:
        s3 = S3SnapshotStore(
            "bench", endpoint_url=endpoint, region="us-east-1", access_key="bench", secret_key="bench"
        )
        s3.ensure_bucket()

        # The big put runs first, so nothing else this process allocates can mask its peak; the
        # baseline is taken with the client ready, so first-use allocations (part buffer, zstd
        # workers, connection pool) count as growth.
        before = maxrss_mib()
        t0 = time.perf_counter()
        info = s3.put("snapshots/big/1.tar.zst", pack_workspace(generated(args.big_mb * MiB), SPEC))
        elapsed = time.perf_counter() - t0
        print(
            f"big    pack+put of {args.big_mb} MiB stream: {elapsed:.1f} s, "
            f"{args.big_mb / elapsed:.1f} MB/s, "
            f"archive {(info.bytes or 0) / MiB:.0f} MiB, peak RSS growth {maxrss_mib() - before:.1f} MiB "
            f"(process peak {maxrss_mib():.0f} MiB)"
        )
        s3.delete(info.key)

        chunks = workspace(args.workspace_mb * MiB)
        size = sum(map(len, chunks))
        print(f"workspace: {size / MiB:.1f} MiB of tar in {len(chunks)} chunks")
        measure("s3", s3, chunks, size)
        with tempfile.TemporaryDirectory() as tmp:
            measure("local", LocalSnapshotStore(tmp), chunks, size)
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait(timeout=10)


if __name__ == "__main__":
    main()
