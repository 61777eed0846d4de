"""kill -9 at every step of a suspend and of a collection, on the local store and S3 (moto): no piece
a manifest needs is ever missing, and the next pass past the grace leaves only the pieces manifests name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandbox_lifecycle.adapters.snapshots.collect import collect_pieces
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.pieces import KILL_AT_STEP_ENV
from sandbox_lifecycle.core.ports import SnapshotStore
from tests.support.pieces import BASE, GRACE_S, NEW, OLD, Clock, missing, pieces, referenced, seeded

ROOT = Path(__file__).resolve().parents[4]
# More steps than a suspend or a collection of these small workspaces takes; the loop ends sooner.
MAX_STEPS = 30
START = 1_000_000.0


def spec_of(store: SnapshotStore) -> str:
    if isinstance(store, LocalSnapshotStore):
        return f"local:{store.root}"
    return f"s3:{store.bucket}@{store._endpoint}"  # type: ignore[attr-defined]


def run(mode: str, store: SnapshotStore, now: float, kill_at: int) -> int:
    env = {**os.environ, KILL_AT_STEP_ENV: str(kill_at)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.piece_worker", mode, spec_of(store), repr(now)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr.decode()[-2000:]
    return done.returncode


def reset(store: SnapshotStore) -> None:
    for key in list(store.keys("")):
        store.delete(key)


def settle(store: SnapshotStore, clock: Clock) -> None:
    """The next sweep past the grace: stale uploads removed, and only named pieces left."""
    clock.now += 2 * GRACE_S
    store.remove_stale_uploads(datetime.now(UTC) + timedelta(days=1))
    assert collect_pieces(store, grace_s=GRACE_S, clock=clock).aborted is None
    assert pieces(store) == referenced(store)


def test_kill_9_at_every_step_of_a_suspend(store: SnapshotStore) -> None:
    finished = False
    for step in range(1, MAX_STEPS + 1):
        reset(store)
        clock = Clock(START)
        seeded(store, clock)
        code = run("suspend", store, clock.now, step)
        assert missing(store) == {}, f"killed at step {step}"
        settle(store, clock)
        if code == 0:
            finished = True
            assert store.stat(NEW) is not None
            break
    assert finished, f"the suspend did not finish within {MAX_STEPS} steps"


def test_kill_9_at_every_step_of_a_collection(store: SnapshotStore) -> None:
    finished = False
    for step in range(1, MAX_STEPS + 1):
        reset(store)
        clock = Clock(START)
        seeded(store, clock)
        store.delete(OLD)  # its pieces are the collection's work
        kept = referenced(store)
        code = run("collect", store, clock.now, step)
        assert missing(store) == {} and kept <= pieces(store), f"killed at step {step}"
        assert store.stat(BASE) is not None
        settle(store, clock)
        if code == 0:
            finished = True
            break
    assert finished, f"the collection did not finish within {MAX_STEPS} steps"
