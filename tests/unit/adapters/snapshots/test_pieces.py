"""Piece names and keys, the step counter, and the bound on a stored piece's size."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.pieces import (
    KILL_AT_STEP_ENV,
    PieceStore,
    Steps,
    born_ms,
    name_of_key,
    piece_key,
    piece_name,
    valid_piece_name,
)
from sandbox_lifecycle.core.errors import SnapshotCorrupt
from sandbox_lifecycle.core.ports import SnapshotInfo

SHA = hashlib.sha256(b"x").hexdigest()
# The largest object read as a piece: 1 MiB plus zstd's worst-case overhead and a margin.
_MAX_STORED = (1 << 20) + (1 << 13) + 4096


def test_a_piece_key_holds_its_name_and_nothing_else_passes_for_one() -> None:
    name = piece_name(SHA, 1234, "0123456789abcdef")
    assert name == f"{SHA}-1234-0123456789abcdef" and valid_piece_name(name)
    assert piece_key(name) == f"pieces/{SHA[:2]}/{name}"
    assert name_of_key(piece_key(name)) == name
    assert born_ms(name) == 1234
    assert name_of_key(f"pieces/zz/{name}") is None  # not where that name lives
    assert name_of_key(f"pieces/{SHA[:2]}/{name}.partial") is None
    assert name_of_key(name) is None
    for bad in (SHA, f"{SHA}-x-0123456789abcdef", f"{SHA[:-1]}-1-0123456789abcdef", f"../{name}"):
        assert not valid_piece_name(bad)
    with pytest.raises(ValueError):
        born_ms("nope")
    assert piece_name(SHA, 1) != piece_name(SHA, 1)  # a nonce of its own every time


def test_steps_call_the_hook_with_what_they_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KILL_AT_STEP_ENV, raising=False)
    seen: list[str] = []
    steps = Steps(seen.append)
    steps("a")
    steps("b")
    assert (steps.count, seen) == (2, ["a", "b"])


def test_an_object_larger_than_any_piece_is_refused_unread(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    name = piece_name(SHA, 1)
    store.put(piece_key(name), io.BytesIO(b"\0" * (_MAX_STORED + 1)))
    with pytest.raises(SnapshotCorrupt, match="larger than any piece"):
        PieceStore(store).get(name, 1)
    store.put(piece_key(name), io.BytesIO(b"\0" * _MAX_STORED))
    with pytest.raises(SnapshotCorrupt, match="not a valid compressed piece"):
        PieceStore(store).get(name, 1)


def test_a_bad_reference_is_refused_before_the_store_is_asked(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    with pytest.raises(SnapshotCorrupt, match="not a valid piece reference"):
        PieceStore(store).get("../../x", 1)
    with pytest.raises(SnapshotCorrupt, match="not a valid piece reference"):
        PieceStore(store).get(piece_name(SHA, 1), 2 << 20)


def test_a_piece_longer_than_the_manifest_says_is_refused(tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path)
    name, _ = PieceStore(store).put(SHA, b"x")
    # The stored piece holds "xx" under the name of "x": longer than recorded, caught before hashing.
    store.put(piece_key(name), io.BytesIO(zstandard.ZstdCompressor().compress(b"xx")))
    with pytest.raises(SnapshotCorrupt, match="2 bytes, expected 1"):
        PieceStore(store).get(name, 1)


def test_a_piece_the_store_did_not_take_whole_fails_the_put(tmp_path: Path) -> None:
    class Short(LocalSnapshotStore):
        def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
            info = super().put(key, stream)
            return SnapshotInfo(info.key, info.sha256, (info.bytes or 0) - 1)

    with pytest.raises(SnapshotCorrupt, match="stored"):
        PieceStore(Short(tmp_path)).put(SHA, b"x")
