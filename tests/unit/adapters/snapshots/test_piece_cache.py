"""The host's piece cache: bounded, least recently used out first, verified on the way out."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from sandbox_lifecycle.adapters.snapshots.cache import DiskPieceCache
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.pieces import PieceStore, piece_name


def piece(data: bytes) -> tuple[str, bytes]:
    return piece_name(hashlib.sha256(data).hexdigest(), 1), zstandard.ZstdCompressor().compress(data)


def test_a_cached_piece_comes_back_verified(tmp_path: Path) -> None:
    cache = DiskPieceCache(tmp_path, 1 << 20)
    name, packed = piece(b"hello")
    assert cache.get(name, 5) is None
    cache.put(name, packed)
    assert cache.get(name, 5) == b"hello"


def test_a_damaged_cached_piece_is_dropped_not_returned(tmp_path: Path) -> None:
    cache = DiskPieceCache(tmp_path, 1 << 20)
    name, packed = piece(b"hello")
    _, other = piece(b"HELLO")
    cache.put(name, packed)
    (tmp_path / name[:2] / name).write_bytes(other)
    assert cache.get(name, 5) is None
    assert not (tmp_path / name[:2] / name).exists()


def test_the_least_recently_used_go_first_past_the_limit(tmp_path: Path) -> None:
    blobs = [piece(os.urandom(1000)) for _ in range(4)]
    cache = DiskPieceCache(tmp_path, 3 * len(blobs[0][1]) + 10)
    for i, (name, packed) in enumerate(blobs[:3]):
        cache.put(name, packed)
        os.utime(tmp_path / name[:2] / name, (1000 + i, 1000 + i))
    assert cache.get(blobs[0][0], 1000) is not None  # touched: now the most recent
    cache.put(*blobs[3])
    present = [cache.get(name, 1000) is not None for name, _ in blobs]
    assert present == [True, False, False, True]


def test_a_piece_larger_than_the_whole_cache_is_not_kept(tmp_path: Path) -> None:
    cache = DiskPieceCache(tmp_path, 10)
    name, packed = piece(os.urandom(100))
    cache.put(name, packed)
    assert cache.get(name, 100) is None


def test_no_cache_of_zero_bytes() -> None:
    with pytest.raises(ValueError):
        DiskPieceCache("/nonexistent", 0)


def test_a_resume_from_a_warm_cache_reads_nothing_from_the_store(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path / "store")
    cache = DiskPieceCache(tmp_path / "cache", 1 << 20)
    name, _ = PieceStore(store, cache=cache).put(hashlib.sha256(b"data").hexdigest(), b"data")
    for key in list(store.keys("")):
        store.delete(key)
    assert PieceStore(store, cache=cache).get(name, 4) == b"data"
