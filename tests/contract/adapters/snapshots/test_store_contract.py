"""One contract for every SnapshotStore: the local directory and S3 (moto over HTTP on loopback)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from sandbox_lifecycle.adapters.snapshots.archive import fetch_verified
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore
from sandbox_lifecycle.core.errors import SnapshotCorrupt, SnapshotNotFound
from sandbox_lifecycle.core.ports import SnapshotInfo
from tests.support.fixtures.snapshots import PART_SIZE

Store = LocalSnapshotStore | S3SnapshotStore
KEY = "snapshots/sbx-1/3.tar.zst"


class Trickle(io.RawIOBase):
    """Hands out at most ``step`` bytes per read and can fail after ``fail_after`` bytes, like a
    network or docker stream would."""

    def __init__(self, data: bytes, step: int = 10_000, fail_after: int | None = None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise ConnectionResetError("source stream broke")
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def read_all(stream: BinaryIO) -> bytes:
    with stream:
        return b"".join(iter(lambda: stream.read(50_000), b""))


def listed(store: Store, prefix: str = "") -> list[str]:
    return sorted(store.keys(prefix))


@pytest.mark.parametrize("size", [0, 1000, PART_SIZE - 1, PART_SIZE, 3 * PART_SIZE + 123])
def test_put_then_open_round_trips_with_sha256_and_size(store: Store, size: int) -> None:
    data = os.urandom(size)
    info = store.put(KEY, Trickle(data))  # type: ignore[arg-type]
    assert info == SnapshotInfo(KEY, hashlib.sha256(data).hexdigest(), size)
    assert read_all(store.open(KEY)) == data
    assert store.stat(KEY) == size
    assert store.info(KEY) == info


def test_put_overwrites(store: Store) -> None:
    store.put(KEY, io.BytesIO(b"old" * 50_000))
    store.put(KEY, io.BytesIO(b"new"))
    assert read_all(store.open(KEY)) == b"new"


def test_missing_key(store: Store) -> None:
    assert store.stat(KEY) is None
    assert store.info(KEY) is None
    with pytest.raises(SnapshotNotFound) as err:
        store.open(KEY)
    assert err.value.key == KEY


def test_delete_is_idempotent(store: Store) -> None:
    store.put(KEY, io.BytesIO(b"data"))
    store.delete(KEY)
    store.delete(KEY)
    assert store.stat(KEY) is None
    assert listed(store) == []
    store.delete("snapshots/never/1.tar.zst")


def test_keys_by_prefix(store: Store) -> None:
    keys = ["snapshots/a/1.tar.zst", "snapshots/a/2.tar.zst", "snapshots/ab/1.tar.zst", "other/x.tar.zst"]
    for key in keys:
        store.put(key, io.BytesIO(key.encode()))
    assert listed(store) == sorted(keys)
    assert listed(store, "snapshots/a/") == keys[:2]
    assert listed(store, "snapshots/a") == keys[:3]
    assert listed(store, "snapshots/") == keys[:3]
    assert listed(store, "nothing/") == []


@pytest.mark.parametrize("fail_after", [PART_SIZE // 2, 2 * PART_SIZE + 10])
def test_failed_upload_leaves_nothing(store: Store, tmp_path: Path, fail_after: int) -> None:
    source = Trickle(os.urandom(4 * PART_SIZE), fail_after=fail_after)
    with pytest.raises(ConnectionResetError):
        store.put(KEY, source)  # type: ignore[arg-type]
    assert store.stat(KEY) is None
    assert listed(store) == []
    if isinstance(store, S3SnapshotStore):
        uploads = store._client.list_multipart_uploads(Bucket=store.bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_failed_upload_keeps_the_previous_object(store: Store) -> None:
    store.put(KEY, io.BytesIO(b"v1"))
    with pytest.raises(ConnectionResetError):
        store.put(KEY, Trickle(os.urandom(3 * PART_SIZE), fail_after=PART_SIZE))  # type: ignore[arg-type]
    assert read_all(store.open(KEY)) == b"v1"


def test_fetch_verified_over_each_store(store: Store) -> None:
    data = os.urandom(2 * PART_SIZE + 5)
    info = store.put(KEY, io.BytesIO(data))
    with fetch_verified(store, info) as f:
        assert f.read() == data
    with pytest.raises(SnapshotCorrupt), fetch_verified(store, SnapshotInfo(KEY, "0" * 64, info.bytes)):
        pytest.fail("must not be entered")
