"""Directories in and out of a sandbox as streamed tar, in bounded memory, under the restore's rules.

``pack_dir`` turns a local directory into tar chunks for a sandbox to extract; ``extract_stream`` writes
a tar stream that came from a sandbox into a local directory. Both hold at most a few 1 MiB chunks and
one tar header at a time, whatever the size of the tree.

The sandbox is untrusted, so a download is the security boundary: the stream may hold anything its code
chose to put there (a crafted tar in place of the one we asked for). ``extract_stream`` applies the rules
``archive.restore_stream`` applies to snapshots (no absolute names, no ``..``, no links leaving the root,
no devices or FIFOs, no setuid/setgid bits) and, since it writes to the backend's own disk, never writes
through a link: every parent is checked with ``lstat`` to be a real directory, and files are created
``O_EXCL | O_NOFOLLOW`` after removing what was there. Unsafe members are left out and named in the
report rather than failing the whole transfer, as ``pack_workspace`` leaves out a user's
``ln -s /etc x``: one odd link must not make a workspace impossible to download.

An upload is built here from the backend's own files, so its members are clean by construction: every
one owned by the sandbox user, no setuid bits, no special files, only symlinks that stay inside.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sandbox_lifecycle.adapters.observability import progress
from sandbox_lifecycle.adapters.snapshots.archive import (
    CHUNK,
    _ancestors,
    _name_problem,
    _plain_link_problem,
)
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.ports import TransferReport

__all__ = ["TransferCounter", "extract_stream", "pack_dir"]

log = logging.getLogger(__name__)

_BLOCK = tarfile.BLOCKSIZE
_END_OF_ARCHIVE = b"\0" * (2 * _BLOCK)
# Permission bits only: setuid, setgid and sticky never survive a transfer either way.
_PERMISSIONS = 0o777
# A report names at most this many skipped members (a hostile tree could hold millions); the rest are
# counted in the last entry.
_MAX_SKIPPED_NAMES = 100


@dataclass
class TransferCounter:
    """Counts what a transfer moved, filled in as the stream is consumed."""

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    _more_skipped: int = 0
    # Names left out that were not regular files (links, devices): nothing is written beneath them
    # either, or a member "etc/passwd" after a refused "etc -> /etc" would land as a real directory,
    # something the sandbox never had.
    blocked: set[str] = field(default_factory=set)

    def skip(self, name: str, why: str) -> None:
        log.warning("directory transfer leaves out %r: %s", name, why)
        if len(self.skipped) < _MAX_SKIPPED_NAMES:
            self.skipped.append(name)
        else:
            self._more_skipped += 1

    def report(self) -> TransferReport:
        skipped = list(self.skipped)
        if self._more_skipped:
            skipped.append(f"... and {self._more_skipped} more")
        return TransferReport(files=self.files, bytes=self.bytes, skipped=tuple(skipped))


# --- upload: a local directory as tar chunks -------------------------------------------------------


def pack_dir(local_dir: str, counter: TransferCounter, *, owner: tuple[int, int]) -> Iterator[bytes]:
    """The contents of ``local_dir`` as tar chunks, member names relative to it, for a sandbox to extract
    into the target directory. Lazily: nothing is read until the chunks are.

    Every member is owned by ``owner`` (Docker extracts as root with the stored ids); permission bits
    only; symlinks only when they stay inside ``local_dir`` (relative, never climbing above it);
    sockets, FIFOs and devices are left out. Symlinks are never followed.
    """
    if not os.path.isdir(local_dir):
        raise NotADirectoryError(f"{local_dir} is not a directory")
    return _gather(_pack_members(os.path.abspath(local_dir), counter, owner))


def _gather(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Merge the small pieces (headers, padding, small files) into ~CHUNK-sized chunks, and pass big
    ones (a large file's data) through as they are: copying every byte into a buffer first cost a
    quarter of the upload's time."""
    buf = bytearray()
    for piece in pieces:
        if len(piece) >= CHUNK // 4:
            if buf:
                yield bytes(buf)
                buf.clear()
            yield piece
            continue
        buf += piece
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def _pack_members(root: str, counter: TransferCounter, owner: tuple[int, int]) -> Iterator[bytes]:
    # os.walk with followlinks=False lists a symlink to a directory among the directories but does not
    # descend into it; each name is judged by its own lstat below.
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        rel_dir = os.path.relpath(directory, root)
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed while we walked
            info = tarfile.TarInfo(rel)
            info.uid, info.gid = owner
            # Go's tar reader prefers names to ids when they resolve in the container.
            info.uname = info.gname = ""
            info.mtime = int(st.st_mtime)
            info.mode = st.st_mode & _PERMISSIONS
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if problem := _plain_link_problem(rel, target):
                    counter.skip(rel, problem)
                    continue
                info.type, info.linkname = tarfile.SYMTYPE, target
                yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            elif stat.S_ISREG(st.st_mode):
                yield from _file_member(path, rel, info, counter)
            else:
                counter.skip(rel, "socket, FIFO or device")
    yield _END_OF_ARCHIVE


def _file_member(path: str, rel: str, info: tarfile.TarInfo, counter: TransferCounter) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as file:
        # The size of the file we opened, not of whatever the name pointed at when it was listed.
        size = os.fstat(file.fileno()).st_size
        info.type, info.size = tarfile.REGTYPE, size
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        remaining = size
        while remaining:
            chunk = file.read(min(CHUNK, remaining))
            if not chunk:
                # The header promised `size` bytes; a shorter member would corrupt every one after it.
                raise ProviderError(f"{path} shrank while being uploaded; retry")
            remaining -= len(chunk)
            yield chunk
    if pad := -size % _BLOCK:
        yield b"\0" * pad
    counter.files += 1
    counter.bytes += size
    progress.advance(size)


# --- download: a sandbox's tar stream into a local directory ----------------------------------------


def extract_stream(chunks: Iterable[bytes], local_dir: str, *, top: str | None) -> TransferReport:
    """Write the tar stream of a sandbox directory named ``top`` (Docker's ``get_archive`` shape:
    ``top`` itself, then ``top/...``; ``tar -C dir -c .`` is ``top="."``) into ``local_dir``, which is
    created if missing. ``top=None``: the member names are relative to ``local_dir`` already.

    NotADirectoryError when the stream holds a single file called ``top`` (the path was a file).
    Members outside ``top/`` or unsafe to write are skipped and named in the report.
    """
    root = os.path.abspath(local_dir)
    # Made once the stream shows a directory: a file's stream must not leave an empty directory where
    # the caller will write that file instead.
    if top is None:
        os.makedirs(root, exist_ok=True)
    counter = TransferCounter()
    tar = _TarStream(chunks)
    try:
        for member in tar.members():
            name = member.name.rstrip("/")
            if top is None:
                _extract_member(tar, member, name, root, None, counter)
                continue
            if name == top:
                if not member.isdir():
                    raise NotADirectoryError(f"{top} in the sandbox is not a directory")
                os.makedirs(root, exist_ok=True)
                continue
            os.makedirs(root, exist_ok=True)
            if not name.startswith(top + "/"):
                counter.skip(member.name, f"outside {top}/")
                continue
            _extract_member(tar, member, name[len(top) + 1 :], root, top, counter)
    except (tarfile.TarError, EOFError) as exc:
        raise ProviderError(f"the archive of {top} from the sandbox is malformed: {exc}") from exc
    finally:
        tar.close()
    return counter.report()


# Bounds what one PAX header or GNU long name may hold: a name is at most PATH_MAX, and nothing else of
# a header is kept; a hostile stream must not make us buffer without limit.
_MAX_META_BYTES = 1 << 20


class _TarStream:
    """A forward-only tar reader over byte chunks, made for speed and bounded memory.

    ``tarfile``'s stream mode copies every byte through two joins and a slice per read, which held a
    download to ~65 MB/s; here file data goes from the received chunks to ``os.write`` as memoryview
    slices. Headers are still parsed by ``tarfile.TarInfo.frombuf`` (checksums, number fields); PAX
    ``path``/``linkpath``/``size`` and GNU long names (``L``/``K``) are applied to the next member, PAX
    global headers are read and ignored. Only this module consumes the stream, so there is no other
    parser whose reading could differ from ours.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")
        self._pending = 0  # data (and padding) of the last member not consumed yet

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def _fill(self) -> bool:
        while not self._view:
            nxt = next(self._chunks, None)
            if nxt is None:
                return False
            self._view = memoryview(nxt)
        return True

    def _read(self, size: int) -> bytes:
        parts = []
        while size:
            if not self._fill():
                raise tarfile.ReadError("unexpected end of archive")
            piece = self._view[:size]
            self._view = self._view[len(piece) :]
            size -= len(piece)
            parts.append(bytes(piece))
        return b"".join(parts)

    def _skip(self, size: int) -> None:
        while size:
            if not self._fill():
                raise tarfile.ReadError("unexpected end of archive")
            step = min(size, len(self._view))
            self._view = self._view[step:]
            size -= step

    def _meta(self, size: int) -> bytes:
        if size > _MAX_META_BYTES:
            raise tarfile.ReadError(f"a {size}-byte tar extension header")
        data = self._read(size)
        self._skip(-size % _BLOCK)
        return data

    def members(self) -> Iterator[tarfile.TarInfo]:
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            self._skip(self._pending)
            self._pending = 0
            if not self._fill():
                return  # a stream cut at a member boundary; tar's two zero blocks are optional here
            block = self._read(_BLOCK)
            if block.count(0) == _BLOCK:
                return  # end of archive
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
                records = _pax_records(self._meta(info.size))
                if info.type != tarfile.XGLTYPE:
                    pax.update(records)
                continue
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                value = self._meta(info.size).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = value
                else:
                    long_link = value
                continue
            if long_name is not None:
                info.name = long_name
            if long_link is not None:
                info.linkname = long_link
            if "path" in pax:
                info.name = pax["path"]
            if "linkpath" in pax:
                info.linkname = pax["linkpath"]
            if "size" in pax:
                try:
                    info.size = int(pax["size"])
                except ValueError:
                    raise tarfile.ReadError(f"bad PAX size {pax['size']!r}") from None
            pax, long_name, long_link = {}, None, None
            if info.size < 0:
                raise tarfile.ReadError(f"negative size for {info.name!r}")
            # As tarfile reads it: regular files (GNU sparse ones among them) and unknown types carry data.
            carries = info.isreg() or info.type not in tarfile.SUPPORTED_TYPES
            self._pending = info.size + (-info.size % _BLOCK) if carries else 0
            yield info

    def copy_data(self, member: tarfile.TarInfo, fd: int) -> None:
        """Write the data of the member just yielded to ``fd``, straight from the received chunks."""
        remaining = member.size
        while remaining:
            if not self._fill():
                raise tarfile.ReadError(f"{member.name!r} ends {remaining} bytes early")
            piece = self._view[:remaining]
            written = 0
            while written < len(piece):
                written += os.write(fd, piece[written:])
            self._view = self._view[len(piece) :]
            remaining -= len(piece)
        self._pending = -member.size % _BLOCK


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records of a PAX header."""
    records: dict[str, str] = {}
    pos = 0
    for _ in range(len(data)):  # each record is at least one byte long
        if pos >= len(data):
            break
        space = data.find(b" ", pos)
        if space == -1:
            raise tarfile.ReadError("malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise tarfile.ReadError("malformed PAX header") from None
        if length <= space - pos or pos + length > len(data):
            raise tarfile.ReadError("malformed PAX header")
        key, eq, value = data[space + 1 : pos + length - 1].partition(b"=")
        if not eq:
            raise tarfile.ReadError("malformed PAX header")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _real_dirs(root: str, rel: str) -> bool:
    """Make every parent of ``rel`` a real directory under ``root``: missing ones are created, and False
    when one is anything else (a symlink above all: writing through it could land anywhere)."""
    for parent in _ancestors(rel):
        path = os.path.join(root, parent)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            return False
    return True


def _clear(path: str) -> bool:
    """Remove a non-directory at ``path`` so it can be created anew; False when a directory is there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if stat.S_ISDIR(st.st_mode):
        return False
    os.unlink(path)
    return True


def _extract_member(
    tar: _TarStream,
    member: tarfile.TarInfo,
    rel: str,
    root: str,
    top: str | None,
    counter: TransferCounter,
) -> None:
    if problem := _name_problem(rel):
        counter.skip(member.name, problem)
        return
    if counter.blocked and any(a in counter.blocked for a in _ancestors(rel)):
        counter.skip(rel, "below a member that was left out")
        return
    if member.type == tarfile.GNUTYPE_SPARSE or not (
        member.isreg() or member.isdir() or member.issym() or member.islnk()
    ):
        counter.blocked.add(rel)
        counter.skip(rel, "device, FIFO, sparse or other special file")
        return
    if not _real_dirs(root, rel):
        counter.skip(rel, "a parent is not a directory (a symlink is never written through)")
        return
    path = os.path.join(root, rel)
    mode = member.mode & _PERMISSIONS
    if member.isdir():
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                counter.skip(rel, "a non-directory of that name was extracted before")
                return
        # Owner write and search stay, or the members below could not be written.
        os.chmod(path, mode | 0o700)
    elif member.issym():
        if problem := _plain_link_problem(rel, member.linkname):
            counter.blocked.add(rel)
            counter.skip(rel, problem)
            return
        if not _clear(path):
            counter.skip(rel, "a directory of that name was extracted before")
            return
        os.symlink(member.linkname, path)
    elif member.islnk():
        # Docker sends a file with several names once, then links to it: copy the link's target if it
        # is a regular file this extraction wrote inside the root.
        target = member.linkname.rstrip("/")
        target_rel = target if top is None else _below(target, top)
        source = os.path.join(root, target_rel)
        if (
            not target_rel
            or _name_problem(target_rel)
            or not _real_dirs(root, target_rel)
            or not _is_regular(source)
        ):
            counter.skip(rel, f"hardlink to {member.linkname!r}, not a file of this directory")
            return
        if not _clear(path):
            counter.skip(rel, "a directory of that name was extracted before")
            return
        os.link(source, path, follow_symlinks=False)
        counter.files += 1
    else:
        if not _clear(path):
            counter.skip(rel, "a directory of that name was extracted before")
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            tar.copy_data(member, fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        counter.files += 1
        counter.bytes += member.size
        progress.advance(member.size)


def _below(name: str, top: str) -> str:
    """``name`` relative to ``top``, or "" when it is not below it."""
    return name[len(top) + 1 :] if name.startswith(top + "/") else ""


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
