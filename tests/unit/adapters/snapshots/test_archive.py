"""Workspace archives: filtering on pack, fidelity of the round trip, refusal of hostile archives."""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from sandbox_lifecycle.adapters.snapshots.archive import (
    extract_to_dir,
    fetch_verified,
    pack_workspace,
    restore_stream,
)
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.errors import ProviderError, SnapshotCorrupt, UnsafeArchive
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import SnapshotInfo, WorkspaceSpec
from tests.support.tarutil import (
    Entry,
    dir_,
    docker_chunks,
    file,
    hardlink,
    members,
    special,
    symlink,
    zst,
)

DATA_APP = kind_spec("data-app").workspace
WRITEBACK = kind_spec("ai-writeback").workspace

WORKSPACE = [
    dir_("app"),
    file("app/index.js", b"console.log(1)\n"),
    file("app/run.sh", b"#!/bin/sh\necho hi\n", mode=0o755),
    dir_("app/src", mode=0o700),
    file("app/src/big.bin", os.urandom(300_000)),
    symlink("app/current", "src/big.bin"),
    symlink("app/up", "../.claude/settings.json"),
    hardlink("app/index-copy.js", "app/index.js"),
    dir_("app/node_modules"),
    file("app/node_modules/lib.js", b"module"),
    dir_("app/src/.cache"),
    file("app/src/.cache/c", b"c"),
    dir_("app/dist"),
    file("app/dist/bundle.js", b"b"),
    file("app/debug.log", b"log"),
    dir_(".claude"),
    file(".claude/settings.json", b"{}"),
    file(".bashrc", b"export X=1"),
    dir_("other"),
    file("other/secret", b"s"),
]


def restored(spec: WorkspaceSpec, packed: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    return members(b"".join(restore_stream(io.BytesIO(packed), spec)))


def test_pack_keeps_only_include_paths_minus_excludes_with_relative_names() -> None:
    packed = pack_workspace(docker_chunks(WORKSPACE), DATA_APP).read()
    assert sorted(restored(DATA_APP, packed)) == [
        ".claude",
        ".claude/settings.json",
        "app",
        "app/current",
        "app/index-copy.js",
        "app/index.js",
        "app/run.sh",
        "app/src",
        "app/src/big.bin",
        "app/up",
    ]


def test_round_trip_keeps_content_modes_owners_times_and_links() -> None:
    packed = pack_workspace(docker_chunks(WORKSPACE), DATA_APP).read()
    out = restored(DATA_APP, packed)
    originals = {e.name: e for e in WORKSPACE}
    for name, (info, data) in out.items():
        e = originals[name]
        assert (info.mode, info.uid, info.gid, info.mtime) == (e.mode, e.uid, e.gid, e.mtime), name
        assert data == e.data, name
    assert out["app/current"][0].issym() and out["app/current"][0].linkname == "src/big.bin"
    assert out["app/index-copy.js"][0].islnk() and out["app/index-copy.js"][0].linkname == "app/index.js"
    assert out["app/src"][0].isdir()


def test_extract_to_dir_materializes_the_workspace(tmp_path: Path) -> None:
    packed = pack_workspace(docker_chunks(WORKSPACE), DATA_APP)
    extract_to_dir(io.BytesIO(packed.read()), DATA_APP, tmp_path)
    assert (tmp_path / "app/run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.stat(tmp_path / "app/run.sh").st_mode & 0o777 == 0o755
    assert os.readlink(tmp_path / "app/current") == "src/big.bin"
    assert (tmp_path / "app/up").read_bytes() == b"{}"
    assert os.stat(tmp_path / "app/index-copy.js").st_ino == os.stat(tmp_path / "app/index.js").st_ino
    assert not (tmp_path / "app/node_modules").exists()
    assert not (tmp_path / ".bashrc").exists()


def test_pack_keeps_parent_dirs_of_nested_include_paths_only() -> None:
    spec = WorkspaceSpec(root="/home/sandbox", include=("a/b",))
    entries = [dir_("a", mode=0o711), file("a/sibling"), dir_("a/b"), file("a/b/f", b"f"), file("z")]
    out = restored(spec, pack_workspace(docker_chunks(entries), spec).read())
    assert sorted(out) == ["a", "a/b", "a/b/f"]
    assert out["a"][0].mode == 0o711


def test_writeback_excludes_anchored_and_any_depth_patterns() -> None:
    entries = [
        dir_("repo"),
        file("repo/models/x.sql", b"select 1"),
        dir_("repo/target"),
        file("repo/target/run.json"),
        dir_("repo/models/target"),
        file("repo/models/target/kept.sql", b"k"),
        dir_("repo/pkg/__pycache__"),
        file("repo/pkg/__pycache__/m.pyc"),
        dir_("repo/.git"),
        file("repo/.git/HEAD", b"ref: refs/heads/main\n"),
    ]
    out = restored(WRITEBACK, pack_workspace(docker_chunks(entries), WRITEBACK).read())
    assert "repo/models/target/kept.sql" in out  # "repo/target" is anchored at the root
    assert "repo/target/run.json" not in out and "repo/target" not in out
    assert not any("__pycache__" in n for n in out)
    assert out["repo/.git/HEAD"][1] == b"ref: refs/heads/main\n"


def test_pack_leaves_out_what_restore_would_refuse(caplog: pytest.LogCaptureFixture) -> None:
    entries = [
        dir_("app"),
        file("app/ok", b"ok"),
        symlink("app/abs", "/etc/passwd"),
        symlink("app/escape", "../../etc"),
        symlink("app/zigzag", "x/../../.."),
        special("app/fifo", tarfile.FIFOTYPE),
        special("app/null", tarfile.CHRTYPE),
        dir_("app/node_modules"),
        file("app/node_modules/dep", b"d"),
        hardlink("app/dep-link", "app/node_modules/dep"),
        hardlink("app/fifo-link", "app/fifo"),
    ]
    with caplog.at_level(logging.WARNING, logger="sandbox_lifecycle.adapters.snapshots.archive"):
        out = restored(DATA_APP, pack_workspace(docker_chunks(entries), DATA_APP).read())
    assert sorted(out) == ["app", "app/ok"]
    for dropped in ("app/abs", "app/escape", "app/zigzag", "app/fifo", "app/null", "app/dep-link"):
        assert dropped in caplog.text


def test_pack_is_lazy_and_source_errors_surface_from_read() -> None:
    consumed = []

    def failing() -> Iterator[bytes]:
        consumed.append(True)
        yield from docker_chunks([dir_("app"), file("app/a", os.urandom(3 << 20))])
        raise ConnectionError("docker went away")

    stream = pack_workspace(failing(), DATA_APP)
    assert consumed == []
    with pytest.raises(ConnectionError, match="docker went away"):
        while stream.read(1 << 16):
            pass


def test_pack_rejects_a_stream_that_is_not_a_tar() -> None:
    with pytest.raises(ProviderError, match="malformed"):
        pack_workspace([b"not a tar" * 200], DATA_APP).read()


def test_pack_rejects_members_outside_the_requested_root() -> None:
    chunks = docker_chunks([file("app/x")], top="elsewhere")
    with pytest.raises(ProviderError, match="unexpected member"):
        pack_workspace(chunks, DATA_APP).read()


def test_symlink_loops_lead_nowhere_and_are_kept() -> None:
    entries = [dir_("app"), symlink("app/a", "b"), symlink("app/b", "a"), symlink("app/self", "self/x")]
    out = restored(DATA_APP, pack_workspace(docker_chunks(entries), DATA_APP).read())
    assert {n: i.linkname for n, (i, _) in out.items() if i.issym()} == {
        "app/a": "b",
        "app/b": "a",
        "app/self": "self/x",
    }


def test_restore_strips_setuid_and_setgid() -> None:
    out = restored(DATA_APP, zst([dir_("app"), file("app/su", b"x", mode=0o6755)]).getvalue())
    assert out["app/su"][0].mode == 0o755


HOSTILE: dict[str, list[Entry]] = {
    "absolute path": [file("/etc/cron.d/x")],
    "dotdot": [file("app/../../etc/x")],
    "dotdot inside": [file("app/a/../b")],
    "outside include paths": [file(".bashrc")],
    "absolute symlink": [symlink("app/l", "/etc")],
    "symlink escapes": [symlink("app/l", "../../etc")],
    "symlink chain escapes": [symlink("app/x/y/z", "s/.."), symlink("app/x/y/s", "../../..")],
    "write through symlink": [symlink("app/l", "../.claude"), file("app/l/x", b"x")],
    "file then symlink": [file("app/f"), symlink("app/f", "g")],
    "hardlink outside": [hardlink("app/h", "/etc/passwd")],
    "hardlink dotdot": [hardlink("app/h", "../etc/passwd")],
    "hardlink to later member": [hardlink("app/h", "app/f"), file("app/f")],
    "hardlink to missing": [hardlink("app/h", "app/missing")],
    "hardlink to symlink": [symlink("app/s", "x"), hardlink("app/h", "app/s")],
    "char device": [special("app/tty", tarfile.CHRTYPE)],
    "block device": [special("app/sda", tarfile.BLKTYPE)],
    "fifo": [special("app/p", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_anything_is_yielded_or_written(
    case: str, tmp_path: Path
) -> None:
    bad = HOSTILE[case]
    # Benign members first: a streaming check would already have passed them on.
    archive = zst([dir_("app"), file("app/fine", b"fine" * 1000), *bad, file("app/after")])
    with pytest.raises(UnsafeArchive) as err:
        restore_stream(archive, DATA_APP)
    assert any(e.name in str(err.value) for e in bad), str(err.value)
    dest = tmp_path / "dest"
    dest.mkdir()
    archive.seek(0)
    with pytest.raises(UnsafeArchive):
        extract_to_dir(archive, DATA_APP, dest)
    assert list(dest.iterdir()) == []


def test_garbage_is_refused_as_malformed() -> None:
    good = zst([dir_("app"), file("app/a", os.urandom(50_000))]).getvalue()
    for blob in (b"garbage" * 100, good[: len(good) // 2], zstandard.ZstdCompressor().compress(b"x" * 700)):
        with pytest.raises(UnsafeArchive, match="malformed"):
            restore_stream(io.BytesIO(blob), DATA_APP)


# --- fetch_verified -------------------------------------------------------------------------------


def _stored(tmp_path: Path) -> tuple[LocalSnapshotStore, SnapshotInfo]:
    store = LocalSnapshotStore(tmp_path / "store")
    info = store.put("snapshots/s1/1.tar.zst", pack_workspace(docker_chunks(WORKSPACE), DATA_APP))
    return store, info


def test_fetch_verified_yields_the_verified_object_and_removes_it(tmp_path: Path) -> None:
    store, info = _stored(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with fetch_verified(store, info, tmpdir=tmp) as f:
        assert "app/index.js" in members(b"".join(restore_stream(f, DATA_APP)))
    assert f.closed
    assert list(tmp.iterdir()) == []


def test_corrupted_object_is_refused_before_restore(tmp_path: Path) -> None:
    store, info = _stored(tmp_path)
    path = tmp_path / "store" / info.key
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    entered = False
    with pytest.raises(SnapshotCorrupt, match="sha256"), fetch_verified(store, info):
        entered = True
    assert not entered


@pytest.mark.parametrize("delta", [-1, 1])
def test_size_mismatch_is_refused(tmp_path: Path, delta: int) -> None:
    store, info = _stored(tmp_path)
    wrong = SnapshotInfo(info.key, info.sha256, (info.bytes or 0) + delta)
    with pytest.raises(SnapshotCorrupt, match="bytes"), fetch_verified(store, wrong):
        pytest.fail("must not be entered")


def test_snapshot_without_sha256_is_not_restored(tmp_path: Path) -> None:
    store, info = _stored(tmp_path)
    with (
        pytest.raises(SnapshotCorrupt, match="no sha256"),
        fetch_verified(store, SnapshotInfo(info.key, None, None)),
    ):
        pytest.fail("must not be entered")
