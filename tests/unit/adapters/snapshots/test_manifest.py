"""Manifests: what encode writes parses back the same; anything else is SnapshotCorrupt, never a crash."""

from __future__ import annotations

import contextlib
import json

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.snapshots.manifest import MAGIC, Entry, Manifest, is_manifest
from sandbox_lifecycle.adapters.snapshots.pieces import PIECE_SIZE
from sandbox_lifecycle.core.errors import SnapshotCorrupt

NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
PIECE = st.tuples(
    st.from_regex(r"[0-9a-f]{64}-[0-9]{1,15}-[0-9a-f]{16}", fullmatch=True), st.integers(1, PIECE_SIZE)
)
FILES = st.builds(
    lambda name, mode, mtime, pieces: Entry(name, "f", mode, mtime, sum(s for _, s in pieces), pieces=pieces),
    NAMES,
    st.integers(0, 0o7777),
    st.integers(0, 2**40),
    st.lists(PIECE, max_size=4),
)
OTHERS = st.builds(
    lambda name, kind, link: Entry(name, kind, 0o755, 0, link=link),
    NAMES,
    st.sampled_from("dlh"),
    st.text(max_size=20),
)


def body(doc: object) -> bytes:
    return MAGIC + zstandard.ZstdCompressor().compress(json.dumps(doc).encode())


@given(st.lists(st.one_of(FILES, OTHERS), max_size=12))
def test_what_encode_writes_parses_back_the_same(entries: list[Entry]) -> None:
    manifest = Manifest(entries)
    again = Manifest.parse(manifest.encode(), "k")
    assert again == manifest
    assert again.workspace_bytes == sum(e.size for e in entries if e.type == "f")


@given(st.binary(max_size=200))
def test_any_bytes_are_a_manifest_or_snapshot_corrupt(data: bytes) -> None:
    for candidate in (data, MAGIC + data):
        with contextlib.suppress(SnapshotCorrupt):
            Manifest.parse(candidate, "k")


ROW = ["app/a", "f", 0o644, 0, 3, "", 0, 0, [["a" * 64 + "-1-" + "0" * 16, 3]]]


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"format": 2, "entries": []},
        {"format": 1, "entries": {}},
        {"format": 1, "entries": [ROW[:8]]},
        {"format": 1, "entries": [[*ROW[:1], "x", *ROW[2:]]]},
        {"format": 1, "entries": [[*ROW[:2], -1, *ROW[3:]]]},
        {"format": 1, "entries": [[*ROW[:2], True, *ROW[3:]]]},
        {"format": 1, "entries": [[*ROW[:4], 4, *ROW[5:]]]},  # pieces do not add up
        {"format": 1, "entries": [[*ROW[:8], [["../../etc/passwd", 3]]]]},
        {"format": 1, "entries": [[*ROW[:8], [["a" * 64 + "-1-" + "0" * 16, 0]]]]},
        {"format": 1, "entries": [[*ROW[:8], [["a" * 64 + "-1-" + "0" * 16, PIECE_SIZE + 1]]]]},
        {"format": 1, "entries": [["app", "d", 0o755, 0, 3, "", 0, 0, ROW[8]]]},  # a dir with content
        {"format": 1, "entries": [[*ROW[:8], "not a list"]]},
        {"format": 1, "entries": [[*ROW[:8], 5]]},
        {
            "format": 1,
            "entries": [[*ROW[:4], 0, *ROW[5:8], [["a" * 64 + "-1-" + "0" * 16, 0]]]],
        },  # empty piece
        {"format": 1, "entries": [[1, *ROW[1:]]]},
    ],
)
def test_a_malformed_manifest_is_snapshot_corrupt(doc: object) -> None:
    with pytest.raises(SnapshotCorrupt, match="not a valid checkpoint manifest"):
        Manifest.parse(body(doc), "snapshots/s/2.tar.zst")


def test_a_valid_row_parses() -> None:
    (entry,) = Manifest.parse(body({"format": 1, "entries": [ROW]}), "k").entries
    assert (entry.name, entry.size, entry.pieces) == ("app/a", 3, [("a" * 64 + "-1-" + "0" * 16, 3)])


def test_an_archive_is_told_apart_by_its_first_bytes() -> None:
    assert is_manifest(Manifest([]).encode())
    assert not is_manifest(zstandard.ZstdCompressor().compress(b"tar"))
    with pytest.raises(SnapshotCorrupt, match="no manifest header"):
        Manifest.parse(zstandard.ZstdCompressor().compress(b"tar"), "k")
