"""Streaming workspace archives: a zstd-compressed tar holding a kind's include paths.

Stored archives name members relative to the workspace root (``app/x.js``). Everything streams: a
workspace of any size passes through a bounded number of 1 MiB chunks, never a whole-archive buffer.

Restoring is the security boundary. A stored object may have been tampered with or produced by a
compromised sandbox, so ``restore_stream`` validates every member before it yields a byte, and then
re-serializes the members it validated instead of forwarding the stored bytes: Docker extracts with Go's
tar reader, and handing it only canonical headers we built removes any parser differential between what
Python checked and what Go would write.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

import zstandard

from sandbox_lifecycle.adapters.observability import progress
from sandbox_lifecycle.core.errors import ProviderError, SnapshotCorrupt, UnsafeArchive
from sandbox_lifecycle.core.ports import SnapshotInfo, SnapshotStore, WorkspaceSpec

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "HashingReader",
    "WorkspaceTooLarge",
    "check_members",
    "coalesce",
    "extract_to_dir",
    "fetch_verified",
    "filtered_members",
    "filtered_tar",
    "pack_workspace",
    "reserialize_members",
    "restore_stream",
]

log = logging.getLogger(__name__)


class WorkspaceTooLarge(ProviderError):
    """A snapshot would expand past the sandbox's disk limit; it was refused before anything was written.

    Not a loss: the snapshot is kept, and the sandbox stays where it was (suspended)."""

    retryable = False


CHUNK = 1 << 20
ZSTD_LEVEL = 3
# zstd's multithreaded default job size at level 3 let a 2-worker compressor hold ~95 MB in flight;
# 2 MiB jobs cut that to ~18 MB at no measurable cost in speed. More than 4 workers would outrun any
# docker stream or upload while multiplying that memory.
ZSTD_JOB_SIZE = 2 << 20
ZSTD_THREADS = min(4, os.cpu_count() or 1)
_BLOCK = tarfile.BLOCKSIZE
# Two zero blocks end a tar archive.
_END_OF_ARCHIVE = b"\0" * (2 * _BLOCK)
# Linux gives up (ELOOP) after following 40 links in one lookup; the kernel does the extracting.
_MAX_LINK_HOPS = 40
# setuid/setgid bits are never needed in a workspace and are the classic privilege escalation vector
# for a tampered archive that Docker extracts as root with the stored uid/gid.
_MODE_MASK = 0o7777 & ~0o6000


class HashingReader:
    """Wraps a binary stream; counts bytes and computes sha256 of everything read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        self.bytes_read += len(data)
        progress.advance(len(data))
        return data

    def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes unless the stream ends first (plain ``read`` may return short)."""
        first = self.read(size)
        if len(first) == size or not first:
            return first
        parts = [first]
        missing = size - len(first)
        while missing:
            more = self.read(missing)
            if not more:
                break
            parts.append(more)
            missing -= len(more)
        return b"".join(parts)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


# --- chunk iterators <-> file objects -------------------------------------------------------------


class _IterRaw(io.RawIOBase):
    """A readable raw stream over an iterator of byte chunks, so a generator pipeline is a file object."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._pending = memoryview(nxt)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        # Closing a half-read archive closes the generator chain now rather than at garbage
        # collection, which releases the docker response behind it promptly.
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


def _reader(chunks: Iterable[bytes]) -> BinaryIO:
    return io.BufferedReader(_IterRaw(chunks), buffer_size=CHUNK)


def coalesce(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Merge the many tiny header/padding pieces into ~CHUNK-sized chunks (one syscall each downstream)."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


# --- paths ----------------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a ``**``-aware glob (``**/node_modules``, ``repo/target``, ``**/*.log``) to a regex.

    ``*`` and ``?`` never cross ``/``; ``**/`` spans zero or more directories. fnmatch cannot express
    that, and glob.translate only exists from Python 3.13.
    """
    pat = pattern.strip("/")
    out: list[str] = []
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif pat[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pat[i] == "?":
            out.append("[^/]")
            i += 1
        elif pat[i] == "[" and (close := pat.find("]", i + 2)) != -1:
            body = pat[i + 1 : close]
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = close + 1
        else:
            out.append(re.escape(pat[i]))
            i += 1
    return re.compile("".join(out))


def _ancestors(path: str) -> Iterator[str]:
    """Proper ancestors of a relative path, shortest first: ``a/b/c`` -> ``a``, ``a/b``."""
    idx = path.find("/")
    while idx != -1:
        yield path[:idx]
        idx = path.find("/", idx + 1)


def _name_problem(name: str) -> str | None:
    """Why a member name may not be written under the root, or None when it may."""
    if not name:
        return "empty name"
    if name.startswith("/"):
        return "absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "'..' component"
    if "\0" in name or any(p in ("", ".") for p in parts):
        return "non-canonical path"
    return None


def _plain_link_problem(link: str, target: str) -> str | None:
    """Pack's rule for symlinks: relative, every ``..`` before any name, never above the root.

    A target shaped ``../../lib/x`` can only climb from the link's own (real) directory, so no chain of
    such links can leave the root whatever order they arrive in; one pass over docker's stream suffices.
    """
    if not target:
        return "empty symlink target"
    if target.startswith("/"):
        return f"absolute symlink target {target!r}"
    ups = 0
    descended = False
    for part in target.split("/"):
        if part == "..":
            if descended:
                return f"symlink target {target!r} climbs after descending"
            ups += 1
        elif part not in ("", "."):
            descended = True
    if ups > link.count("/"):
        return f"symlink target {target!r} escapes the workspace root"
    return None


def _link_target_problem(link: str, target: str, symlinks: dict[str, str]) -> str | None:
    """Why symlink ``link -> target`` resolves outside the root, following archive symlinks on the way.

    Checking the target lexically is not enough: ``a/b/z -> s/..`` stays inside on paper but
    escapes when ``a/b/s -> ../../..`` leads to the root first. So resolve it the way the kernel would, with
    the archive's own links; components the archive does not hold are treated as plain directories.
    """
    if not target:
        return "empty symlink target"
    if target.startswith("/"):
        return f"absolute symlink target {target!r}"
    stack = link.split("/")[:-1]
    pending = target.split("/")
    pending.reverse()
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return f"symlink target {target!r} escapes the workspace root"
            stack.pop()
            continue
        stack.append(part)
        nxt = symlinks.get("/".join(stack))
        if nxt is None:
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            # The kernel refuses such a chain with ELOOP before reaching its end, so it leads nowhere,
            # let alone outside. Refusing it instead would make a harmless `ln -s x x` (which pack
            # keeps) cost the whole workspace.
            return None
        if nxt.startswith("/"):
            return f"symlink target {target!r} goes through an absolute symlink"
        stack.pop()
        more = nxt.split("/")
        more.reverse()
        pending.extend(more)
    return None


@dataclass(frozen=True)
class _Paths:
    """A spec's include/exclude rules, normalized once."""

    include: tuple[str, ...]
    exclude: tuple[re.Pattern[str], ...]
    # Directories above an include path (``a`` for include ``a/b``) are kept so their modes survive.
    include_parents: frozenset[str]

    @classmethod
    def of(cls, spec: WorkspaceSpec) -> _Paths:
        include = tuple(posixpath.normpath(p.strip("/")) for p in spec.include if p.strip("/"))
        parents = frozenset(a for p in include for a in _ancestors(p))
        return cls(include, tuple(_glob_regex(p) for p in spec.exclude), parents)

    def included(self, name: str, *, is_dir: bool) -> bool:
        if any(name == p or name.startswith(p + "/") for p in self.include):
            return True
        return is_dir and name in self.include_parents

    def excluded(self, name: str) -> bool:
        # A pattern naming a directory drops everything beneath it, so test every ancestor too.
        candidates = [*_ancestors(name), name]
        return any(rx.fullmatch(c) for rx in self.exclude for c in candidates)


# --- tar serialization ----------------------------------------------------------------------------


def _clean_info(member: tarfile.TarInfo, name: str, linkname: str = "") -> tarfile.TarInfo:
    """A fresh header carrying only what a workspace needs; PAX extras (xattrs, stale paths) are dropped.

    Copying the member would keep its pax_headers, and a stale ``path`` record there overrides the name.
    """
    info = tarfile.TarInfo(name)
    info.mode = member.mode & _MODE_MASK
    info.uid, info.gid = member.uid, member.gid
    info.uname, info.gname = member.uname, member.gname
    info.mtime = member.mtime
    if member.isreg():
        info.type, info.size = tarfile.REGTYPE, member.size
    elif member.isdir():
        info.type = tarfile.DIRTYPE
    elif member.issym():
        info.type, info.linkname = tarfile.SYMTYPE, linkname
    else:
        info.type, info.linkname = tarfile.LNKTYPE, linkname
    return info


def _file_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    data = tar.extractfile(member)
    if data is None:
        raise tarfile.ReadError(f"no data for {member.name!r}")
    remaining = member.size
    while remaining:
        chunk = data.read(min(CHUNK, remaining))
        if not chunk:
            raise tarfile.ReadError(f"{member.name!r} ends {remaining} bytes early")
        remaining -= len(chunk)
        yield chunk


def _info_bytes(info: tarfile.TarInfo, data: Iterable[bytes]) -> Iterator[bytes]:
    """A member's header, then (a regular file) exactly ``info.size`` bytes of ``data`` and the padding."""
    yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if info.type != tarfile.REGTYPE:
        return
    sent = 0
    for chunk in data:
        sent += len(chunk)
        if sent > info.size:
            raise tarfile.ReadError(f"{info.name!r} has more than its {info.size} bytes")
        yield chunk
    if sent != info.size:
        raise tarfile.ReadError(f"{info.name!r} ends {info.size - sent} bytes early")
    if pad := -info.size % _BLOCK:
        yield b"\0" * pad


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Iterate a stream-mode tar without the TarFile keeping every header it has seen (it does by
    default, which for a big workspace is hundreds of MB of TarInfo objects)."""
    while (member := tar.next()) is not None:
        yield member
        tar.members.clear()  # type: ignore[attr-defined]  # real attribute, missing from typeshed


def _open_stream(fileobj: BinaryIO) -> tarfile.TarFile:
    return tarfile.open(fileobj=fileobj, mode="r|", bufsize=CHUNK)


# --- pack -----------------------------------------------------------------------------------------


def pack_workspace(
    tar_chunks: Iterable[bytes], spec: WorkspaceSpec, *, level: int = ZSTD_LEVEL, threads: int = ZSTD_THREADS
) -> BinaryIO:
    """Filter docker's ``get_archive(spec.root)`` stream to the spec and compress it, lazily.

    Compression runs on ``threads`` zstd workers (0: inline), so it overlaps with the upload that
    reads the returned stream.

    Nothing is read from ``tar_chunks`` until the returned stream is read, and errors of the source
    surface from that ``read`` (so a store's put fails and cleans up). Members that restore would
    refuse (device nodes, FIFOs, symlinks leaving the root, hardlinks to dropped files) are left out
    with a warning instead: a user's ``ln -s /tmp/x app/x`` must not make the whole workspace
    unrestorable.
    """
    raw = filtered_tar(tar_chunks, spec)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=threads, job_size=ZSTD_JOB_SIZE if threads else 0
    )
    cctx = zstandard.ZstdCompressor(compression_params=params)
    return _reader(_compress(cctx, coalesce(raw)))


def _compress(cctx: zstandard.ZstdCompressor, chunks: Iterable[bytes]) -> Iterator[bytes]:
    cobj = cctx.compressobj()
    for chunk in chunks:
        if out := cobj.compress(chunk):
            yield out
    yield cobj.flush()


def filtered_tar(tar_chunks: Iterable[bytes], spec: WorkspaceSpec) -> Iterator[bytes]:
    """The members ``filtered_members`` keeps, as a tar stream."""
    for info, data in filtered_members(tar_chunks, spec):
        yield from _info_bytes(info, data)
    yield _END_OF_ARCHIVE


def filtered_members(
    tar_chunks: Iterable[bytes], spec: WorkspaceSpec
) -> Iterator[tuple[tarfile.TarInfo, Iterator[bytes]]]:
    """Docker's ``get_archive(spec.root)`` stream reduced to what a snapshot keeps: each member as a clean
    header (relative name) with its data (empty but for regular files), which must be read before the
    next member is asked for."""
    paths = _Paths.of(spec)
    top = posixpath.basename(spec.root.rstrip("/"))
    # Symlinks and special files seen so far: nothing may be written beneath them, and a hardlink to
    # one of them (docker links any non-directory with several names) must not point at a regular file.
    not_regular: set[str] = set()

    def relative(name: str) -> str:
        if name.startswith(top + "/"):
            return name[len(top) + 1 :]
        # Every member docker sends sits under basename(root); anything else means the stream is not
        # what we asked for, and packing part of it would silently lose data.
        raise ProviderError(f"archive of {spec.root} holds unexpected member {name!r}")

    def keep(rel: str, *, is_dir: bool) -> bool:
        return (
            _name_problem(rel) is None
            and paths.included(rel, is_dir=is_dir)
            and not paths.excluded(rel)
            and not any(a in not_regular for a in _ancestors(rel))
        )

    try:
        with _open_stream(_reader(tar_chunks)) as tar:
            for member in _members(tar):
                if member.name.rstrip("/") == top:
                    continue
                rel = relative(member.name)
                if not keep(rel, is_dir=member.isdir()):
                    continue
                linkname = ""
                if member.issym():
                    not_regular.add(rel)
                    linkname = member.linkname
                    problem = _plain_link_problem(rel, linkname)
                    if problem:
                        log.warning("snapshot of %s leaves out symlink %r: %s", spec.root, rel, problem)
                        continue
                elif member.islnk():
                    # Docker links to an earlier member, so whether that one made it into the archive as
                    # a regular file follows from its path and the set above, without a set of all files.
                    target = member.linkname
                    linkname = target[len(top) + 1 :] if target.startswith(top + "/") else ""
                    if not linkname or linkname in not_regular or not keep(linkname, is_dir=False):
                        log.warning(
                            "snapshot of %s leaves out %r: hardlink to %r, not kept", spec.root, rel, target
                        )
                        continue
                elif not (member.isreg() or member.isdir()):
                    not_regular.add(rel)
                    log.warning("snapshot of %s leaves out %r: special file", spec.root, rel)
                    continue
                data = _file_data(tar, member) if member.isreg() else iter(())
                yield _clean_info(member, rel, linkname), _malformed_as(spec, data)
    except (tarfile.TarError, EOFError) as exc:
        raise ProviderError(f"archive of {spec.root} from the provider is malformed: {exc}") from exc


def _malformed_as(spec: WorkspaceSpec, data: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from data
    except (tarfile.TarError, EOFError) as exc:
        raise ProviderError(f"archive of {spec.root} from the provider is malformed: {exc}") from exc


# --- restore --------------------------------------------------------------------------------------


def _decompressed(compressed: BinaryIO) -> BinaryIO:
    reader = zstandard.ZstdDecompressor().stream_reader(
        compressed, read_size=CHUNK, read_across_frames=True, closefd=False
    )
    return cast(BinaryIO, reader)


def _too_large(total: int, max_bytes: int) -> WorkspaceTooLarge:
    return WorkspaceTooLarge(
        f"the snapshot expands to more than {total} bytes of files, past the sandbox's disk limit of "
        f"{max_bytes} bytes; nothing was restored and the snapshot is kept (raise SANDBOX_DISK_LIMIT_MB "
        "to restore it)"
    )


def _validate(compressed: BinaryIO, spec: WorkspaceSpec, max_bytes: int | None = None) -> None:
    """One full pass over the archive; raises UnsafeArchive naming the first offending member, or
    WorkspaceTooLarge as soon as the members' sizes add up past ``max_bytes``. The pass only reads the
    sizes from the headers, so a 320 KB archive of 10 GiB of zeros is refused after reading 320 KB."""
    with _open_stream(_decompressed(compressed)) as tar:
        check_members(_members(tar), spec, max_bytes)


def check_members(
    members: Iterable[tarfile.TarInfo], spec: WorkspaceSpec, max_bytes: int | None = None
) -> None:
    """The safety rules of a restore, over the members' headers alone: raises UnsafeArchive naming the
    first offending member, or WorkspaceTooLarge once the regular files' sizes pass ``max_bytes``.

    One function for both forms a snapshot takes (a whole archive, or a manifest of pieces), so a
    checkpoint of either kind is held to exactly the same rules.
    """
    paths = _Paths.of(spec)
    total = 0
    # name -> tar type of every member: duplicates and hardlink targets are judged against it.
    seen: dict[str, bytes] = {}
    symlinks: dict[str, str] = {}

    def refuse(name: str, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"snapshot member {name!r} is unsafe: {why}; nothing was restored")

    for member in members:
        name = member.name
        if problem := _name_problem(name):
            raise refuse(name, problem)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise refuse(name, "device, FIFO or other special file")
        if not paths.included(name, is_dir=member.isdir()):
            raise refuse(name, f"outside the include paths {', '.join(paths.include)}")
        kind = tarfile.DIRTYPE if member.isdir() else member.type
        if name in seen and not (kind == seen[name] == tarfile.DIRTYPE):
            # A second member of one name replaces the first on extraction: a file turning into a
            # symlink after its checks is exactly how write-through attacks are built.
            raise refuse(name, "appears twice")
        seen[name] = kind
        if member.isreg():
            total += member.size
            if max_bytes is not None and total > max_bytes:
                raise _too_large(total, max_bytes)
        if member.issym():
            symlinks[name] = member.linkname
        elif member.islnk() and seen.get(member.linkname) not in tarfile.REGULAR_TYPES:
            raise refuse(name, f"hardlink to {member.linkname!r}, not an earlier file in the archive")
    # Links may point through links that come later in the archive, so judge them with all of them known.
    for name, target in symlinks.items():
        if problem := _link_target_problem(name, target, symlinks):
            raise refuse(name, problem)
    for name in seen:
        through = next((a for a in _ancestors(name) if a in symlinks), None)
        if through is not None:
            raise refuse(name, f"would be written through symlink {through!r}")


def restore_stream(
    compressed: BinaryIO,
    spec: WorkspaceSpec,
    *,
    max_bytes: int | None = None,
    owner: tuple[int, int] | None = None,
) -> Iterator[bytes]:
    """Validate the whole archive now, then return an iterator of uncompressed tar chunks.

    Validation runs before this function returns (not lazily on the first ``next``), so an
    UnsafeArchive or WorkspaceTooLarge is raised before anything reaches
    ``container.put_archive(spec.root, ...)``. ``compressed`` must be seekable; it is read twice.

    ``max_bytes`` bounds the sum of the regular files' sizes (checked again while streaming, should the
    file change between the passes). ``owner`` (uid, gid) is given to every member, and every directory
    above a member is emitted first with that owner: the stored owners are whatever the sandbox (or a
    tamperer) left, and Docker extracts as root, creating missing parents as root.
    """
    start = compressed.tell()
    try:
        _validate(compressed, spec, max_bytes)
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise UnsafeArchive(f"snapshot archive is malformed ({exc}); nothing was restored") from exc
    compressed.seek(start)
    return coalesce(_reserialize(compressed, max_bytes, owner))


def _owned_by(info: tarfile.TarInfo, owner: tuple[int, int]) -> tarfile.TarInfo:
    info.uid, info.gid = owner
    # Go's tar reader (Docker) prefers the names to the ids when they resolve in the container, so
    # names of the stored owner must not survive.
    info.uname = info.gname = ""
    return info


def _reserialize(
    compressed: BinaryIO, max_bytes: int | None = None, owner: tuple[int, int] | None = None
) -> Iterator[bytes]:
    try:
        with _open_stream(_decompressed(compressed)) as tar:

            def data(member: tarfile.TarInfo) -> Iterable[bytes]:
                return _file_data(tar, member)

            yield from reserialize_members(_members(tar), data, max_bytes, owner)
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        # The file was verified a moment ago; changing under us means someone else writes to it.
        raise UnsafeArchive(f"snapshot archive changed while restoring ({exc})") from exc


def reserialize_members(
    members: Iterable[tarfile.TarInfo],
    data: Callable[[tarfile.TarInfo], Iterable[bytes]],
    max_bytes: int | None = None,
    owner: tuple[int, int] | None = None,
) -> Iterator[bytes]:
    """Canonical tar bytes of members that ``check_members`` accepted, each regular file's content taken
    from ``data(member)`` (which must give exactly ``member.size`` bytes); ends the archive."""
    total = 0
    # Directories emitted so far, to give missing parents our owner (bounded by the directories of the
    # workspace, as _validate's own bookkeeping is).
    dirs: set[str] = set()
    for member in members:
        info = _clean_info(member, member.name, member.linkname)
        if member.isreg():
            total += member.size
            if max_bytes is not None and total > max_bytes:
                raise _too_large(total, max_bytes)
        if owner is not None:
            info = _owned_by(info, owner)
            for parent in _ancestors(member.name):
                if parent not in dirs:
                    dirs.add(parent)
                    implied = tarfile.TarInfo(parent)
                    implied.type, implied.mode, implied.mtime = tarfile.DIRTYPE, 0o755, info.mtime
                    implied = _owned_by(implied, owner)
                    yield implied.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if member.isdir():
                dirs.add(member.name)
        yield from _info_bytes(info, data(member) if info.type == tarfile.REGTYPE else ())
    yield _END_OF_ARCHIVE


def extract_to_dir(compressed: BinaryIO, spec: WorkspaceSpec, dest: str | os.PathLike[str]) -> None:
    """Restore into a local directory (tests, local tools). Validates everything before writing."""
    chunks = restore_stream(compressed, spec)
    with _open_stream(_reader(chunks)) as tar:
        # The "tar" filter is a second fence behind our own validation, not a replacement for it.
        tar.extractall(dest, filter="tar")


# --- fetch ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def fetch_verified(
    store: SnapshotStore, info: SnapshotInfo, tmpdir: str | os.PathLike[str] | None = None
) -> Iterator[BinaryIO]:
    """Download ``info.key`` to an anonymous temp file and check size and sha256 against ``info``.

    Raises SnapshotCorrupt before yielding when they differ, so nothing unverified is ever restored.
    The temp file is rewound for the caller and removed on exit.
    """
    if not info.sha256:
        raise SnapshotCorrupt(info.key, "no sha256 recorded, refusing to restore an unverifiable snapshot")
    with tempfile.TemporaryFile(dir=tmpdir) as tmp:
        source = store.open(info.key)
        try:
            reader = HashingReader(source)
            while chunk := reader.read(CHUNK):
                tmp.write(chunk)
                if info.bytes is not None and reader.bytes_read > info.bytes:
                    # Stop early: an oversized object could otherwise fill the disk before we notice.
                    raise SnapshotCorrupt(info.key, f"larger than the recorded {info.bytes} bytes")
        finally:
            source.close()
        if info.bytes is not None and reader.bytes_read != info.bytes:
            raise SnapshotCorrupt(info.key, f"{reader.bytes_read} bytes, expected {info.bytes}")
        if reader.sha256 != info.sha256:
            raise SnapshotCorrupt(info.key, f"sha256 {reader.sha256}, expected {info.sha256}")
        tmp.seek(0)
        yield tmp
