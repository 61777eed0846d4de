"""The file and directory verbs of the SandboxProvider port, on every harness (fake, docker, e2b).

write_files, remove, list_dir, exists, upload_dir and download_dir must behave the same way everywhere:
paths relative to the kind's workdir, nothing outside the sandbox home, missing paths as documented,
ownership by the sandbox user, and a download that never lets the sandbox write outside the target.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from sandbox_lifecycle.core.errors import ForeignSandbox
from sandbox_lifecycle.core.kinds import DATA_APP, HOME, KINDS
from sandbox_lifecycle.core.ports import FileEntry
from tests.support.fixtures.providers import Harness

BLOB = "héllo\nworld\n".encode() + bytes(range(256))


def _sh(h: Harness, ref: str, script: str) -> str:
    done = h.provider.exec(ref, ["bash", "-c", script], timeout=30)
    assert done.exit_code == 0, done.stderr
    return done.stdout


def _tree(root: Path) -> dict[str, str]:
    """Every entry under root: a file's sha256, a link's target, "dir" for a directory."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------ write_files


def test_write_files_writes_every_file_relative_to_the_workdir(harness: Harness) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    files = {"main.py": b"print(1)\n", "deep/new/dir/blob.bin": BLOB, f"{HOME}/.claude/s.json": b"{}"}

    harness.provider.write_files(ref, files)

    for path, data in files.items():
        assert harness.provider.read_file(ref, path) == data
    assert harness.provider.exec(ref, ["cat", "main.py"], timeout=20).stdout == "print(1)\n"
    # Overwrites whole files; an empty mapping is nothing to do.
    harness.provider.write_files(ref, {"main.py": b"2"})
    harness.provider.write_files(ref, {})
    assert harness.provider.read_file(ref, "main.py") == b"2"
    if harness.name == "docker":
        # New parents and files belong to the sandbox user, not to root (Docker extracts as root).
        owners = _sh(harness, ref, "stat -c %u deep deep/new/dir deep/new/dir/blob.bin").split()
        assert owners == ["1000", "1000", "1000"]


def test_write_files_refuses_paths_outside_the_home(harness: Harness) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    for escape in ("../../../etc/passwd", "/etc/passwd", HOME):
        with pytest.raises(ValueError, match="outside the sandbox home"):
            harness.provider.write_files(ref, {"fine.txt": b"x", escape: b"x"})
    # Checked before anything was written.
    assert not harness.provider.exists(ref, "fine.txt")


# -------------------------------------------------------------------------------------- exists / remove


def test_exists(harness: Harness) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    harness.provider.write_file(ref, "sub/f.txt", b"x")
    _sh(harness, ref, "ln -s nowhere dangling")

    assert harness.provider.exists(ref, "sub/f.txt")
    assert harness.provider.exists(ref, "sub")
    assert harness.provider.exists(ref, f"{KINDS[DATA_APP].workdir}/sub")
    assert harness.provider.exists(ref, "dangling")  # the link is there, whatever it points at
    assert not harness.provider.exists(ref, "missing.txt")
    assert harness.provider.exists(ref, HOME)
    with pytest.raises(ValueError, match="outside the sandbox home"):
        harness.provider.exists(ref, "/etc/passwd")


def test_remove_files_directories_and_links(harness: Harness) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    harness.provider.write_files(ref, {"f.txt": b"x", "d/a/b.txt": b"y", "d/c.txt": b"z", "keep/k.txt": b"k"})
    _sh(harness, ref, "ln -s keep link")

    harness.provider.remove(ref, "f.txt")
    harness.provider.remove(ref, "d")  # recursive
    harness.provider.remove(ref, "link")  # the link, not what it points at
    harness.provider.remove(ref, "never-existed")  # missing is success (a retry must not fail)

    for gone in ("f.txt", "d", "link"):
        assert not harness.provider.exists(ref, gone)
    assert harness.provider.read_file(ref, "keep/k.txt") == b"k"
    with pytest.raises(ValueError, match="outside the sandbox home"):
        harness.provider.remove(ref, "../../..")


# ----------------------------------------------------------------------------------------------- list


def test_list_dir(harness: Harness) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    harness.provider.write_files(ref, {"ls/a.txt": b"12345", "ls/sub/x": b"", "ls/b.bin": BLOB})
    _sh(harness, ref, "ln -s a.txt ls/link")

    entries = harness.provider.list_dir(ref, "ls")

    assert [(e.name, e.type) for e in entries] == [
        ("a.txt", "file"),
        ("b.bin", "file"),
        ("link", "symlink"),
        ("sub", "dir"),
    ]
    sizes = {e.name: e.size for e in entries}
    assert (sizes["a.txt"], sizes["b.bin"]) == (5, len(BLOB))
    assert all(isinstance(e, FileEntry) for e in entries)
    assert harness.provider.list_dir(ref, "ls/sub") == [FileEntry("x", "file", 0)]
    assert "app" in [e.name for e in harness.provider.list_dir(ref, HOME)]
    with pytest.raises(FileNotFoundError):
        harness.provider.list_dir(ref, "missing")
    with pytest.raises(NotADirectoryError):
        harness.provider.list_dir(ref, "ls/a.txt")


# ------------------------------------------------------------------------------------------ directories


def _local_tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_bytes(b"x = 1\n")
    (root / "src" / "blob.bin").write_bytes(BLOB * 100)
    (root / "empty").mkdir()
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho ran\n")
    (root / "run.sh").chmod(0o755)
    (root / "README").write_bytes(b"")
    os.symlink("src/pkg", root / "inside")  # stays inside: kept


def test_upload_then_download_round_trips_a_tree(harness: Harness, tmp_path: Path) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    local = tmp_path / "up"
    _local_tree(local)
    os.symlink("/etc", local / "outside")  # leaves the tree: not uploaded
    (local / "suid").write_bytes(b"x")
    (local / "suid").chmod(0o4755)

    up = harness.provider.upload_dir(ref, str(local), "proj")

    assert (up.files, up.skipped) == (5, ("outside",))
    assert up.bytes == sum(p.stat().st_size for p in local.rglob("*") if p.is_file() and not p.is_symlink())
    assert harness.provider.read_file(ref, "proj/src/pkg/mod.py") == b"x = 1\n"
    assert _sh(harness, ref, "proj/run.sh") == "ran\n"
    assert not harness.provider.exists(ref, "proj/outside")
    # No setuid bit survives, whoever extracts.
    # find, not stat: the Debian package of runsc refuses the statx call of coreutils 9 (docs/gvisor.md).
    assert _sh(harness, ref, "find proj/suid -printf %m").strip() == "755"
    if harness.name == "docker":
        owners = set(_sh(harness, ref, "find proj -printf '%U:%G\\n'").split())
        assert owners == {"1000:1000"}

    out = tmp_path / "down"
    down = harness.provider.download_dir(ref, "proj", str(out))

    (local / "outside").unlink()
    assert _tree(out) == _tree(local)
    assert (down.files, down.bytes, down.skipped) == (up.files, up.bytes, ())
    assert (out / "run.sh").stat().st_mode & 0o777 == 0o755
    # Into an existing directory: files are replaced, others kept.
    (out / "mine.txt").write_bytes(b"mine")
    harness.provider.write_file(ref, "proj/README", b"changed")
    harness.provider.download_dir(ref, "proj", str(out))
    assert (out / "README").read_bytes() == b"changed"
    assert (out / "mine.txt").read_bytes() == b"mine"


def test_directory_transfers_of_missing_paths(harness: Harness, tmp_path: Path) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    harness.provider.write_file(ref, "file.txt", b"x")

    with pytest.raises(FileNotFoundError):
        harness.provider.download_dir(ref, "missing", str(tmp_path / "a"))
    with pytest.raises(NotADirectoryError):
        harness.provider.download_dir(ref, "file.txt", str(tmp_path / "b"))
    with pytest.raises(NotADirectoryError):
        harness.provider.upload_dir(ref, str(tmp_path / "nope"), "x")
    with pytest.raises(ValueError, match="outside the sandbox home"):
        harness.provider.download_dir(ref, "/etc", str(tmp_path / "c"))
    with pytest.raises(ValueError, match="outside the sandbox home"):
        harness.provider.upload_dir(ref, str(tmp_path), "../../../tmp")


def test_a_hostile_tree_is_neutralised_on_download(harness: Harness, tmp_path: Path) -> None:
    """The sandbox's code built links out of the tree, a FIFO and a setuid file: the download writes
    only what is safe, only inside the target, and names what it left out."""
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    _sh(
        harness,
        ref,
        "mkdir -p evil/sub && echo data > evil/ok.txt && ln -s /etc evil/etc && ln -s ../../../.. evil/up "
        "&& ln -s ../ok.txt evil/sub/fine && mkfifo evil/fifo && echo s > evil/suid && chmod 4755 evil/suid",
    )
    out = tmp_path / "down"
    out.mkdir()
    before = set(tmp_path.rglob("*"))

    report = harness.provider.download_dir(ref, "evil", str(out))

    assert sorted(report.skipped) == ["etc", "fifo", "up"]
    assert (out / "ok.txt").read_bytes() == b"data\n"
    assert os.readlink(out / "sub" / "fine") == "../ok.txt"
    assert not os.path.lexists(out / "etc") and not os.path.lexists(out / "up")
    assert not (out / "suid").stat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    # Nothing appeared outside the target.
    outside = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    assert outside == {p for p in before if not p.is_relative_to(out)}


def test_another_deployment_cannot_use_the_file_verbs(harness: Harness, tmp_path: Path) -> None:
    ref = harness.provider.create(harness.new_id(), DATA_APP)
    harness.provider.write_file(ref, "main.py", b"mine")
    copy = harness.other()
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "main.py").write_bytes(b"theirs")

    calls = [
        lambda: copy.write_files(ref, {"main.py": b"theirs"}),
        lambda: copy.remove(ref, "main.py"),
        lambda: copy.list_dir(ref, "."),
        lambda: copy.exists(ref, "main.py"),
        lambda: copy.upload_dir(ref, str(tmp_path / "up"), "."),
        lambda: copy.download_dir(ref, ".", str(tmp_path / "down")),
    ]
    for call in calls:
        with pytest.raises(ForeignSandbox):
            call()
    assert harness.provider.read_file(ref, "main.py") == b"mine"
    assert not (tmp_path / "down").exists()
