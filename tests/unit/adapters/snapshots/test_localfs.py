"""Local-directory specifics: key safety, crash safety of put, tidy deletes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore

KEY = "snapshots/sbx-1/1.tar.zst"
ROOT = Path(__file__).resolve().parents[4]

# Writes 2 MiB under KEY, then blocks forever mid-put, waiting to be killed.
CHILD = """
import sys, time
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore

class Stalling:
    sent = 0
    def read(self, n=-1):
        if self.sent >= 2 << 20:
            time.sleep(3600)
        self.sent += 1 << 20
        return b"n" * (1 << 20)

LocalSnapshotStore(sys.argv[1]).put(sys.argv[2], Stalling())
"""


@pytest.mark.parametrize("key", ["", "/abs/x", "a/../b", "../x", "a//b", "./a", "a/", "a\\b", "x.partial"])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalSnapshotStore(tmp_path)
    with pytest.raises(ValueError, match="invalid snapshot key"):
        store.put(key, io.BytesIO(b"x"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prefix", ["../", "/etc/", "a/../../"])
def test_unsafe_prefixes_are_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid key prefix"):
        list(LocalSnapshotStore(tmp_path / "store").keys(prefix))


def test_killed_put_never_leaves_a_partial_object_under_the_key(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    store.put(KEY, io.BytesIO(b"previous"))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), KEY], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while not any(p.stat().st_size >= 2 << 20 for p in tmp_path.rglob("*.partial")):
            assert time.monotonic() < deadline, "child never started writing"
            assert child.poll() is None, "child exited early"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    with store.open(KEY) as f:
        assert f.read() == b"previous"
    assert list(store.keys()) == [KEY]


def test_delete_prunes_emptied_directories_only(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    store.put("snapshots/a/1.tar.zst", io.BytesIO(b"1"))
    store.put("snapshots/b/1.tar.zst", io.BytesIO(b"1"))
    store.delete("snapshots/a/1.tar.zst")
    assert not (tmp_path / "snapshots/a").exists()
    assert (tmp_path / "snapshots/b/1.tar.zst").exists()
    store.delete("snapshots/b/1.tar.zst")
    assert tmp_path.exists() and list(tmp_path.iterdir()) == []


def test_put_leaves_no_temp_files_behind(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    store.put(KEY, io.BytesIO(os.urandom(3 << 20)))
    assert [p.name for p in (tmp_path / "snapshots/sbx-1").iterdir()] == ["1.tar.zst"]


def kill_mid_put(root: Path, key: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), key], cwd=ROOT)
    target = (root / key).parent
    try:
        deadline = time.monotonic() + 20
        while not target.is_dir() or not any(p.stat().st_size >= 2 << 20 for p in target.glob("*.partial")):
            assert time.monotonic() < deadline, "child never started writing"
            assert child.poll() is None, "child exited early"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def test_leftovers_of_a_killed_put_are_removed_once_stale(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    mine, theirs = "prod/snapshots/sbx-1/3.tar.zst", "staging/snapshots/sbx-1/3.tar.zst"
    store.put("prod/snapshots/sbx-1/2.tar.zst", io.BytesIO(b"kept"))
    kill_mid_put(tmp_path, mine)
    kill_mid_put(tmp_path, theirs)
    (left,) = (p for p in tmp_path.rglob("*.partial") if p.is_relative_to(tmp_path / "prod"))

    # Younger than the cutoff: it might be a put still running, so it stays.
    assert store.remove_stale_uploads(datetime.now(UTC) - timedelta(minutes=10), "prod/") == []
    assert left.exists()

    removed = store.remove_stale_uploads(datetime.now(UTC) + timedelta(seconds=1), "prod/")

    assert removed == [left.relative_to(tmp_path).as_posix()]
    assert not left.exists()
    # Only under the prefix: another deployment's leftovers are its own to remove.
    assert len(list((tmp_path / "staging").rglob("*.partial"))) == 1
    assert list(store.keys("prod/")) == ["prod/snapshots/sbx-1/2.tar.zst"]
    assert store.remove_stale_uploads(datetime.now(UTC) + timedelta(seconds=1), "prod/") == []
