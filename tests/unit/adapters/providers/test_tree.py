"""extract_stream against crafted tars: what a hostile sandbox could send in place of its directory.

A real sandbox can forge the stream (on E2B it could swap the staged tar file), so every trick a tar can
play is tried here directly, without a provider in between.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.providers.tree import TransferCounter, extract_stream, pack_dir


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _m(name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def test_crafted_members_are_left_out_and_nothing_is_written_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"untouched")
    crafted = _tar(
        (_m("top", tarfile.DIRTYPE, mode=0o755), None),
        (_m("top/ok.txt"), b"fine"),
        (_m("top/../victim.txt"), b"owned"),  # climbs out by name
        (_m("/tmp/abs.txt"), b"owned"),  # absolute
        (_m("top/x/../../victim.txt"), b"owned"),
        (_m("top/esc", tarfile.SYMTYPE, link="../.."), None),  # a link out, then a write through it
        (_m("top/esc/victim.txt"), b"owned"),
        (_m("top/etc", tarfile.SYMTYPE, link="/etc"), None),
        (_m("top/etc/passwd"), b"owned"),
        (_m("top/hard", tarfile.LNKTYPE, link="/etc/passwd"), None),  # a hardlink to a host file
        (_m("top/hard2", tarfile.LNKTYPE, link="top/ok.txt"), None),  # to a file of the tree: fine
        (_m("top/dev", tarfile.CHRTYPE), None),
        (_m("top/fifo", tarfile.FIFOTYPE), None),
        (_m("top/suid", mode=0o6755), b"#!/bin/sh\n"),
        (_m("top/ok.txt", tarfile.SYMTYPE, link="/etc/shadow"), None),  # replaces a file by a bad link
        (_m("elsewhere/x"), b"owned"),  # not below the directory asked for
    )

    report = extract_stream([crafted], str(out), top="top")

    assert victim.read_bytes() == b"untouched"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["hard2", "ok.txt", "suid"]
    assert (out / "ok.txt").read_bytes() == b"fine"
    assert (out / "hard2").read_bytes() == b"fine"
    assert stat.S_IMODE((out / "suid").stat().st_mode) == 0o755
    assert set(report.skipped) >= {"top/../victim.txt", "/tmp/abs.txt", "esc", "esc/victim.txt", "etc"}
    assert {"etc/passwd", "hard", "dev", "fifo", "ok.txt", "elsewhere/x"} <= set(report.skipped)
    assert report.files == 3


def test_a_file_named_like_the_directory_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        extract_stream([_tar((_m("top"), b"x"))], str(tmp_path / "out"), top="top")


def test_a_link_planted_in_the_target_is_not_written_through(tmp_path: Path) -> None:
    """A link already in local_dir (a previous download's, or the backend's own) is replaced, never
    followed: the new file lands in local_dir."""
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"untouched")
    os.symlink(outside, out / "f.txt")

    extract_stream([_tar((_m("top", tarfile.DIRTYPE), None), (_m("top/f.txt"), b"new"))], str(out), top="top")

    assert outside.read_bytes() == b"untouched"
    assert not (out / "f.txt").is_symlink() and (out / "f.txt").read_bytes() == b"new"


def test_pack_dir_streams_in_chunks_and_never_follows_links(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(5 << 20))
    os.symlink("/etc", src / "etc")
    counter = TransferCounter()

    chunks = list(pack_dir(str(src), counter, owner=(1000, 1000)))

    assert max(len(c) for c in chunks) <= 2 << 20  # ~1 MiB pieces, never the whole file
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        members = tar.getmembers()
    assert [(m.name, m.uid, m.gid) for m in members] == [("big", 1000, 1000)]
    assert counter.report().skipped == ("etc",)


def test_a_forged_staged_tar_on_e2b_is_neutralised(
    fake_e2b: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On E2B the download reads a tar file the sandbox wrote: a compromised sandbox (its own `tar`)
    can put anything there. Here its "tar" copies a crafted archive into place, through the real SDK."""
    from sandbox_lifecycle.adapters.providers.e2b import files as e2b_files
    from sandbox_lifecycle.core.kinds import DATA_APP
    from tests.support.fixtures.providers import e2b_provider, new_deployment, new_sandbox_id

    provider = e2b_provider(fake_e2b, new_deployment())
    ref = provider.create(new_sandbox_id(), DATA_APP)
    crafted = _tar(
        (_m(".", tarfile.DIRTYPE), None),
        (_m("./ok.txt"), b"fine"),
        (_m("./../../escape.txt"), b"owned"),
        (_m("./etc", tarfile.SYMTYPE, link="/etc"), None),
        (_m("./etc/passwd"), b"owned"),
        (_m("./dev", tarfile.BLKTYPE), None),
        (_m("./suid", mode=0o4755), b"s"),
    )
    provider.write_file(ref, "crafted.tar", crafted)
    provider.write_file(ref, "dir/real.txt", b"real")
    # The forging sandbox: whatever tar was asked to write, the crafted archive is what it gets.
    monkeypatch.setattr(e2b_files, "_TAR_SCRIPT", 'cp app/crafted.tar "$1"')
    out = tmp_path / "deep" / "out"

    report = provider.download_dir(ref, "dir", str(out))

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["ok.txt", "suid"]
    assert stat.S_IMODE((out / "suid").stat().st_mode) == 0o755
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "deep" / "escape.txt").exists()
    assert {"./../../escape.txt", "etc", "etc/passwd", "dev"} <= set(report.skipped)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_links_and_formats_round_trip(tmp_path: Path, fmt: int) -> None:
    """The stream reader's own header handling: PAX path/linkpath, GNU long names, ustar prefixes."""
    deep = "/".join(["d" * 40] * 3)  # 122 characters: past the 100 of a plain header
    long_file = f"top/{deep}/{'n' * 90}.txt" if fmt != tarfile.USTAR_FORMAT else f"top/{deep}/short.txt"
    link_target = "t" * 120 if fmt != tarfile.USTAR_FORMAT else "target"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data, link in (
            ("top", tarfile.DIRTYPE, None, ""),
            (long_file, tarfile.REGTYPE, b"long" * 1000, ""),
            ("top/link", tarfile.SYMTYPE, None, link_target),
            ("top/empty", tarfile.REGTYPE, b"", ""),
        ):
            info = _m(name, kind, link=link)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

    report = extract_stream(
        [buf.getvalue()[i : i + 700] for i in range(0, len(buf.getvalue()), 700)],
        str(tmp_path / "o"),
        top="top",
    )

    assert (tmp_path / "o" / long_file.removeprefix("top/")).read_bytes() == b"long" * 1000
    assert os.readlink(tmp_path / "o" / "link") == link_target
    assert (tmp_path / "o" / "empty").read_bytes() == b""
    assert (report.files, report.bytes, report.skipped) == (2, 4000, ())


def test_a_truncated_stream_is_a_provider_error(tmp_path: Path) -> None:
    from sandbox_lifecycle.core.errors import ProviderError

    data = _tar((_m("top", tarfile.DIRTYPE), None), (_m("top/f"), b"x" * 5000))
    with pytest.raises(ProviderError, match="malformed"):
        extract_stream([data[:2000]], str(tmp_path / "o"), top="top")
    with pytest.raises(ProviderError, match="malformed"):
        extract_stream([b"\1" * 512], str(tmp_path / "p"), top="top")  # a header with a bad checksum
