"""A suspend or a collection in a process of its own, for the kill -9 tests.

``python -m tests.support.piece_worker suspend|collect STORE NOW``: STORE is ``local:<dir>`` or
``s3:<bucket>@<endpoint>``, NOW the clock (seconds). ``SANDBOX_TEST_KILL_AT_STEP`` makes it SIGKILL
itself at that step (see adapters/snapshots/pieces.py).
"""

from __future__ import annotations

import sys

from sandbox_lifecycle.adapters.snapshots.checkpoint import write_checkpoint
from sandbox_lifecycle.adapters.snapshots.collect import collect_pieces
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.pieces import PieceStore
from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore
from sandbox_lifecycle.core.ports import SnapshotStore
from tests.support.pieces import BASE, GRACE_S, NEW, SPEC, changed
from tests.support.tarutil import docker_chunks

# As tests/support/fixtures/snapshots.py's S3 stores (moto accepts any key).
S3_ACCESS_KEY, S3_SECRET, S3_PART = "testing", "s3cr3t-Never-Shown-9f2b", 64 * 1024


def store_of(spec: str) -> SnapshotStore:
    kind, _, where = spec.partition(":")
    if kind == "local":
        return LocalSnapshotStore(where)
    bucket, _, endpoint = where.partition("@")
    return S3SnapshotStore(
        bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET,
        part_size=S3_PART,
    )


def main(mode: str, spec: str, now: str) -> None:
    store = store_of(spec)
    clock = float(now)
    if mode == "suspend":
        pieces = PieceStore(store, clock=lambda: clock)
        write_checkpoint(docker_chunks(changed()), SPEC, pieces, NEW, base_key=BASE, grace_s=GRACE_S)
    else:
        done = collect_pieces(store, grace_s=GRACE_S, clock=lambda: clock)
        if done.aborted:
            raise SystemExit(f"aborted: {done.aborted}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
