"""Checkpoints of pieces against today's whole archives, side by side in one run (issue 22's goals).

    .venv/bin/python bench/checkpoint_bench.py [--workspace-mb 1024] [--turns 3] [--manifests 10000]
                                               [--pieces 1000000]

A workspace of ``--workspace-mb`` (half random 8 MiB files, half 1 MiB text files, each distinct) is held
in memory as docker's get_archive stream would deliver it; each turn overwrites 1 MiB of one random file.
Measured at the snapshot layer (the tar stream in, the tar stream out), without Docker's own
get_archive/put_archive, on the local store and on S3 (a moto server this script starts on loopback):

- today: pack_workspace + put (one whole archive), fetch_verified + restore_stream;
- pieces: the first suspend, then per turn a suspend whose base is the previous checkpoint (time, bytes
  new, store growth); resume with a warm host cache, and cold from S3 (no cache); a fork (the manifest
  copied); and a collection pass over ``--manifests`` manifests naming ``--pieces`` pieces in an
  in-memory store (time and this process's peak RSS growth).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.snapshot_bench import _source_text, start_moto
from sandbox_lifecycle.adapters.snapshots.archive import fetch_verified, pack_workspace, restore_stream
from sandbox_lifecycle.adapters.snapshots.cache import DiskPieceCache
from sandbox_lifecycle.adapters.snapshots.checkpoint import (
    copy_checkpoint,
    read_manifest,
    restore_checkpoint,
    write_checkpoint,
)
from sandbox_lifecycle.adapters.snapshots.collect import collect_pieces
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.manifest import Entry, Manifest
from sandbox_lifecycle.adapters.snapshots.pieces import PieceStore, piece_key, piece_name
from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import SnapshotInfo, SnapshotStore

SPEC = kind_spec("data-app").workspace
MiB = 1 << 20
GRACE_S = 3600.0


# --- the workspace ----------------------------------------------------------------------------------


def build_workspace(total_mb: int, seed: int = 11) -> dict[str, bytes]:
    rng = random.Random(seed)
    corpus = _source_text(rng, 8 * MiB)
    files: dict[str, bytes] = {}
    for i in range(total_mb // 2 // 8):
        files[f"app/assets/b{i}.bin"] = os.urandom(8 * MiB)
    for i in range(total_mb // 2):
        start = rng.randrange(0, 7 * MiB)
        head = f"// module {i} {rng.random()}\n".encode()
        files[f"app/src/m{i}.ts"] = head + corpus[start : start + MiB - len(head)]
    return files


def _header(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, 0o644, 1_700_000_000
    info.uid = info.gid = 1000
    return info.tobuf(tarfile.PAX_FORMAT)


def tar_stream(files: dict[str, bytes]) -> Iterator[bytes]:
    """As docker's get_archive of /home/sandbox delivers it (members under ``sandbox/``)."""
    yield _header("sandbox", kind=tarfile.DIRTYPE) + _header("sandbox/app", kind=tarfile.DIRTYPE)
    yield _header("sandbox/app/assets", kind=tarfile.DIRTYPE) + _header(
        "sandbox/app/src", kind=tarfile.DIRTYPE
    )
    for name, data in files.items():
        yield _header(f"sandbox/{name}", len(data))
        view = memoryview(data)
        for off in range(0, len(data), 2 * MiB):
            yield bytes(view[off : off + 2 * MiB])
        yield b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    yield b"\0" * 1024


def one_turn(files: dict[str, bytes], rng: random.Random) -> str:
    """Overwrite 1 MiB somewhere in one random file (a turn's change)."""
    name = rng.choice(sorted(files))
    data = bytearray(files[name])
    off = rng.randrange(0, max(1, len(data) - MiB))
    data[off : off + MiB] = os.urandom(min(MiB, len(data) - off))
    files[name] = bytes(data)
    return name


# --- helpers ----------------------------------------------------------------------------------------


def stored_bytes(store: SnapshotStore) -> int:
    if isinstance(store, LocalSnapshotStore):
        return sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, S3SnapshotStore)
    total = 0
    for page in store._client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def drain(chunks: Iterator[bytes]) -> int:
    return sum(len(c) for c in chunks)


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- sections ---------------------------------------------------------------------------------------


def today(store: SnapshotStore, files: dict[str, bytes], label: str) -> float:
    key = f"snapshots/today-{label}/1.tar.zst"
    put_s, info = timed(lambda: store.put(key, pack_workspace(tar_stream(files), SPEC)))

    def restore() -> int:
        with fetch_verified(store, info) as f:
            return drain(restore_stream(f, SPEC))

    restore_s, _ = timed(restore)
    print(
        f"{label:>5} today   suspend (pack+put) {put_s:6.2f} s   "
        f"archive {(info.bytes or 0) / MiB:7.1f} MiB per suspend"
    )
    print(f"{label:>5} today   resume (fetch+restore) {restore_s:6.2f} s")
    store.delete(key)
    return restore_s


def pieces_run(store: SnapshotStore, files: dict[str, bytes], label: str, turns: int, tmp: Path) -> None:
    cache = DiskPieceCache(tmp / f"cache-{label}", 4096 * MiB)
    pieces = PieceStore(store, cache=cache)
    key = f"snapshots/s-{label}/2.tar.zst"
    first_s, first = timed(
        lambda: write_checkpoint(tar_stream(files), SPEC, pieces, key, base_key=None, grace_s=GRACE_S)
    )
    print(
        f"{label:>5} pieces first suspend {first_s:6.2f} s   new {first.bytes_new / MiB:7.1f} MiB "
        f"(workspace {first.workspace_bytes / MiB:.0f} MiB)"
    )
    rng = random.Random(5)
    base = key
    for turn in range(turns):
        one_turn(files, rng)
        before = stored_bytes(store)
        key = f"snapshots/s-{label}/{4 + 2 * turn}.tar.zst"
        t_s, written = timed(
            lambda k=key, b=base: write_checkpoint(
                tar_stream(files), SPEC, pieces, k, base_key=b, grace_s=GRACE_S
            )
        )
        growth = stored_bytes(store) - before
        print(
            f"{label:>5} pieces turn {turn + 1} suspend {t_s:6.2f} s   "
            f"new pieces {written.bytes_new / MiB:5.2f} MiB"
            f"   store growth {growth / MiB:5.2f} MiB (manifest {written.info.bytes / 1024:.0f} KiB)"
        )
        base = key
    info = SnapshotInfo(base, None, None)
    manifest = Manifest.parse(read_manifest(store, base), base)
    warm_s, n = timed(lambda: drain(restore_checkpoint(manifest, pieces, SPEC)))
    print(f"{label:>5} pieces resume, warm host cache {warm_s:6.2f} s ({n / MiB:.0f} MiB of tar)")
    cold = PieceStore(store)
    cold_s, _ = timed(lambda: drain(restore_checkpoint(manifest, cold, SPEC)))
    print(f"{label:>5} pieces resume, cold (no cache) {cold_s:6.2f} s")
    before_pieces = len(list(store.keys("pieces/")))
    fork_s, _ = timed(
        lambda: copy_checkpoint(store, info, read_manifest(store, base), f"snapshots/f-{label}/1.tar.zst")
    )
    after_pieces = len(list(store.keys("pieces/")))
    print(
        f"{label:>5} pieces fork {fork_s * 1000:6.1f} ms   "
        f"pieces stored by the fork: {after_pieces - before_pieces}"
    )


class MemoryStore:
    """A SnapshotStore in a dict: the collection's own cost, without a store's I/O."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
        self.objects[key] = stream.read()
        return SnapshotInfo(key, None, len(self.objects[key]))

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.objects[key])

    def stat(self, key: str) -> int | None:
        data = self.objects.get(key)
        return None if data is None else len(data)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(k for k in self.objects if k.startswith(prefix)))


def collection(manifests: int, pieces: int) -> None:
    store = MemoryStore()
    born = 1_000  # ms since the epoch: long past any grace
    names = [piece_name(os.urandom(32).hex(), born) for _ in range(pieces)]
    for name in names:
        store.objects[piece_key(name)] = b""
    per = max(1, pieces * 9 // 10 // manifests)  # 90 % of the pieces are named, 10 % are garbage
    for m in range(manifests):
        refs = [(n, 1) for n in names[m * per : (m + 1) * per + per // 2]]
        entry = Entry("app/f", "f", 0o644, 0, size=len(refs), pieces=refs)
        store.objects[f"snapshots/s{m}/2.tar.zst"] = Manifest([entry]).encode()
    del names
    before = maxrss_mib()
    t_s, done = timed(lambda: collect_pieces(store, grace_s=GRACE_S))
    print(
        f"collection over {done.manifests} manifests and {done.pieces} pieces: {t_s:.1f} s, "
        f"deleted {len(done.deleted)}, peak RSS growth {maxrss_mib() - before:.0f} MiB "
        f"(in-memory store: the algorithm's cost, not a store's listing)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--manifests", type=int, default=10_000)
    parser.add_argument("--pieces", type=int, default=1_000_000)
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")
    files = build_workspace(args.workspace_mb)
    print(
        f"workspace: {sum(map(len, files.values())) / MiB:.0f} MiB in {len(files)} files, "
        "half random, half text"
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = LocalSnapshotStore(Path(tmp) / "store")
        today(local, files, "local")
        pieces_run(local, dict(files), "local", args.turns, Path(tmp))
        if not args.skip_s3:
            moto, endpoint = start_moto()
            try:
                s3 = S3SnapshotStore(
                    "bench", endpoint_url=endpoint, region="us-east-1", access_key="bench", secret_key="bench"
                )
                s3.ensure_bucket()
                today(s3, files, "s3")
                pieces_run(s3, dict(files), "s3", args.turns, Path(tmp))
            finally:
                moto.terminate()
                moto.wait(timeout=10)
    collection(args.manifests, args.pieces)


if __name__ == "__main__":
    main()
