"""`sandboxctl cp` end to end through the installed entry point, on the Docker provider."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.adapters.entrypoints.cli.test_cli_docker import Ctl, ctl  # noqa: F401  (the fixture)

pytestmark = pytest.mark.docker


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_cp_files_and_directories_both_ways(ctl: Ctl, docker_client: Any, tmp_path: Path) -> None:  # noqa: F811
    sid = ctl.json("create", "--kind", "data-app")["id"]
    ctl.created.append(sid)
    src = tmp_path / "proj"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_bytes(b"m = 1\n")
    (src / "data.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "one.txt").write_bytes(b"one\n")

    # In: a directory to a new path, a directory into an existing one, a file.
    ctl.ok("cp", str(src), f"{sid}:proj")
    ctl.ok("cp", str(src), f"{sid}:proj")  # proj exists now: lands in proj/proj, as docker cp does
    ctl.ok("cp", str(tmp_path / "one.txt"), f"{sid}:one.txt")
    listing = ctl.ok("exec", sid, "--", "find", "proj", "one.txt", "-type", "f")
    assert sorted(listing.split()) == sorted(
        ["proj/pkg/m.py", "proj/data.bin", "proj/proj/pkg/m.py", "proj/proj/data.bin", "one.txt"]
    )

    # Out: a directory, a file, a file into an existing local directory.
    ctl.ok("cp", f"{sid}:proj", str(tmp_path / "back"))
    ctl.ok("cp", f"{sid}:one.txt", str(tmp_path / "one-back.txt"))
    (tmp_path / "into").mkdir()
    ctl.ok("cp", f"{sid}:one.txt", str(tmp_path / "into"))

    back = _digest(tmp_path / "back")
    assert {k: v for k, v in back.items() if not k.startswith("proj/")} == _digest(src)
    assert (tmp_path / "one-back.txt").read_bytes() == b"one\n"
    assert (tmp_path / "into" / "one.txt").read_bytes() == b"one\n"


def test_cp_usage_and_missing_paths(ctl: Ctl, docker_client: Any, tmp_path: Path) -> None:  # noqa: F811
    sid = ctl.json("create", "--kind", "data-app")["id"]
    ctl.created.append(sid)

    both = ctl.run("cp", f"{sid}:a", f"{sid}:b")
    neither = ctl.run("cp", str(tmp_path / "a"), str(tmp_path / "b"))
    outside = ctl.run("cp", f"{sid}:/etc/passwd", str(tmp_path / "p"))
    missing_remote = ctl.run("cp", f"{sid}:nope", str(tmp_path / "x"))
    missing_local = ctl.run("cp", str(tmp_path / "nope"), f"{sid}:x")
    no_sandbox = ctl.run("cp", "ffffffffffffffff:x", str(tmp_path / "y"))

    assert (both.returncode, neither.returncode) == (2, 2)
    assert "exactly one side" in both.stderr and "exactly one side" in neither.stderr
    assert outside.returncode == 2 and "outside the sandbox home" in outside.stderr
    assert missing_remote.returncode == 4 and "nothing was copied" in missing_remote.stderr
    assert missing_local.returncode == 4
    assert no_sandbox.returncode == 4
    assert not (tmp_path / "x").exists() and not (tmp_path / "p").exists()
