"""Builders for synthetic tar streams shaped like docker's get_archive output, and hostile archives."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard

MTIME = 1_700_000_000


@dataclass(frozen=True)
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 1000
    gid: int = 1000
    mtime: int = MTIME


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, mode=mode)


def dir_(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def special(name: str, kind: bytes) -> Entry:
    return Entry(name, kind, mode=0o600)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.linkname, info.mode = e.type, e.linkname, e.mode
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.uname, info.gname = "sandbox", "sandbox"
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def docker_chunks(entries: list[Entry], top: str = "sandbox", chunk: int = 7777) -> Iterator[bytes]:
    """What docker-py's get_archive yields: members under ``top/``, in odd-sized chunks."""
    prefixed = [dir_(top)]
    for e in entries:
        linkname = f"{top}/{e.linkname}" if e.type == tarfile.LNKTYPE else e.linkname
        prefixed.append(Entry(f"{top}/{e.name}", e.type, e.data, linkname, e.mode, e.uid, e.gid, e.mtime))
    data = tar_bytes(prefixed)
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


def zst(entries: list[Entry]) -> io.BytesIO:
    """A stored-format archive (names relative to root) built directly, bypassing pack's filtering."""
    return io.BytesIO(zstandard.ZstdCompressor(level=3).compress(tar_bytes(entries)))


def members(tar_stream: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_stream), mode="r:") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            out[m.name] = (m, f.read() if f else b"")
    return out
