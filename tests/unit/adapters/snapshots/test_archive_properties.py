"""Property tests for the path rules that keep a restore inside the workspace root."""

from __future__ import annotations

import errno
import io
import os
import posixpath
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.snapshots.archive import extract_to_dir, pack_workspace, restore_stream
from sandbox_lifecycle.core.errors import UnsafeArchive
from sandbox_lifecycle.core.ports import WorkspaceSpec
from tests.support.tarutil import Entry, dir_, docker_chunks, file, hardlink, members, symlink, zst

SPEC = WorkspaceSpec(root="/home/sandbox", include=("app",))
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

segments = st.sampled_from(["a", "b", "..", ".", ""])
# Weighted towards ".." and towards the names of the slots below, so escapes and chains are common.
targets = st.lists(st.sampled_from(["..", "..", "a", "s", "t", "."]), min_size=1, max_size=5).map("/".join)
SLOTS = ("s", "t", "a/s", "a/t", "a/a/s", "a/a/t")


def accepts(archive: io.BytesIO) -> bool:
    try:
        restore_stream(archive, SPEC)
    except UnsafeArchive:
        return False
    return True


@FAST
@given(st.lists(segments, min_size=1, max_size=6))
def test_accepted_member_names_stay_inside_and_plain_names_are_accepted(parts: list[str]) -> None:
    name = "/".join(["app", *parts])
    ok = accepts(zst([dir_("app"), file(name)]))
    joined = posixpath.join("/root", name)
    if ok:
        assert posixpath.normpath(joined) == joined
        assert joined.startswith("/root/app/")
    if all(p not in ("..", ".", "") for p in parts):
        assert ok


@st.composite
def trees(draw: st.DrawFn) -> list[Entry]:
    """Directories app/a/a plus files or symlinks in a few slots, parents first like docker sends them."""
    entries = [dir_("app"), dir_("app/a"), dir_("app/a/a")]
    for slot in SLOTS:
        kind = draw(st.sampled_from(["none", "file", "link", "link"]))
        path = f"app/{slot}"
        if kind == "file":
            entries.append(file(path, path.encode()))
        elif kind == "link":
            entries.append(symlink(path, draw(targets)))
    return entries


def _resolves_to(path: str) -> str | None:
    """Where the kernel takes ``path``, or None when it leads nowhere (dangling, or a loop: ELOOP).

    Asks the kernel first: os.path.realpath mis-resolves some loops (``a -> a//a`` gives ``/a``).
    """
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    return os.path.realpath(path, strict=True)


@FAST
@given(trees())
def test_accepted_symlinks_resolve_inside_the_root_on_a_real_filesystem(entries: list[Entry]) -> None:
    archive = zst(entries)
    if not accepts(archive):
        return
    archive.seek(0)
    with tempfile.TemporaryDirectory() as tmp:
        # Real directories named like the path parts, around and above the root, so a link that
        # escapes lands on something that exists instead of dangling.
        for outer in ("a", "s", "t"):
            for inner in ("a", "s", "t"):
                for leaf in ("", "a", "s", "t"):
                    os.makedirs(os.path.join(tmp, outer, inner, leaf), exist_ok=True)
        root = os.path.join(tmp, "a", "a", "root")
        os.mkdir(root)
        extract_to_dir(archive, SPEC, root)
        real_root = os.path.realpath(root)
        for e in entries:
            if e.linkname and (resolved := _resolves_to(os.path.join(root, e.name))) is not None:
                assert resolved == real_root or resolved.startswith(real_root + "/"), (e.name, e.linkname)


@FAST
@given(trees(), st.booleans())
def test_whatever_pack_keeps_restore_accepts(entries: list[Entry], with_hardlink: bool) -> None:
    files = [e for e in entries if e.data]
    if with_hardlink and files:
        entries = [*entries, hardlink("app/zz-link", files[0].name)]
    packed = pack_workspace(docker_chunks(entries), SPEC).read()
    out = members(b"".join(restore_stream(io.BytesIO(packed), SPEC)))
    for e in files:
        assert out[e.name][1] == e.data
