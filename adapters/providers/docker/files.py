"""Files in a Docker sandbox (the DockerProvider's ``write_file``, ``read_file``, ``list_dir``... calls).

Files go in and out as tar archives through the engine's archive endpoint; every member written is the
sandbox user's. Anything that must run as the sandbox user (making parents, removing, listing) is an exec,
so it can only touch what the sandbox itself could.
"""

from __future__ import annotations

import io
import posixpath
import time
from collections.abc import Iterator, Mapping

from sandbox_lifecycle.adapters.providers.docker.containers import (
    SANDBOX_GID,
    SANDBOX_UID,
    Containers,
    DockerLimits,
)
from sandbox_lifecycle.adapters.providers.docker.errors import is_enospc
from sandbox_lifecycle.adapters.providers.docker.exec import ContainerExec
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.kinds import HOME
from sandbox_lifecycle.core.ports import ExecResult, FileEntry, TransferReport

# Slack over the file's size for tar headers and padding when reading one file's archive.
_TAR_OVERHEAD = 64 * 1024
# Lists a directory as NUL-separated "type<TAB>size<TAB>name" records (names may hold tabs and newlines,
# never NUL); exit 3 when nothing is there, 4 when it is not a directory.
_LIST_SCRIPT = r"""
[[ -e $1 || -L $1 ]] || exit 3
[[ -d $1 ]] || exit 4
exec find "$1" -mindepth 1 -maxdepth 1 -printf '%y\t%s\t%P\0'
"""
_FIND_TYPES = {"f": "file", "d": "dir", "l": "symlink"}


class DockerFiles:
    def __init__(
        self, containers: Containers, execs: ContainerExec, limits: DockerLimits, disk_limit_mb: int
    ) -> None:
        self._containers = containers
        self._exec = execs
        self._limits = limits
        self._disk_limit_mb = disk_limit_mb

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        containers = self._containers
        full = containers.resolve(ref, path)
        parent, name = posixpath.split(full)
        import tarfile  # why: ~3 ms on every exec's start otherwise (measured); only file calls need it

        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), 0o644, int(time.time())
            member.uid = member.gid = SANDBOX_UID
            member.uname = member.gname = "sandbox"
            tar.addfile(member, io.BytesIO(data))
        payload = archive.getvalue()
        try:
            with containers.errors(f"write {full}", ref, missing_ok=True):
                containers.client.api.put_archive(ref, parent, payload)
            return
        except FileNotFoundError:
            pass
        # The parent is missing: create it as the sandbox user (so it owns every new level), then retry.
        result = self._exec.run(ref, ["mkdir", "-p", "--", parent], timeout=30, cwd=HOME)
        if result.exit_code != 0:
            raise ProviderError(f"cannot create {parent} in the sandbox: {result.stderr.strip()}")
        with containers.errors(f"write {full}", ref):
            containers.client.api.put_archive(ref, parent, payload)

    def read_file(self, ref: str, path: str) -> bytes:
        containers = self._containers
        full = containers.resolve(ref, path)
        limit = self._limits.max_read_bytes
        with containers.errors(f"read {full}", ref, missing_ok=True):
            chunks, stat = containers.client.api.get_archive(ref, full)
            if stat["size"] > limit:
                raise ProviderError(
                    f"{full} is {stat['size']} bytes; read_file returns at most {limit} (raise "
                    "DockerLimits.max_read_bytes, or exec a command that reads it in parts)"
                )
            buffer = bytearray()
            for chunk in chunks:
                buffer += chunk
                if len(buffer) > limit + _TAR_OVERHEAD:  # the file grew while being read
                    raise ProviderError(f"{full} is larger than the {limit} bytes read_file returns")
        import tarfile  # why: ~3 ms on every exec's start otherwise (measured); only file calls need it

        with tarfile.open(fileobj=io.BytesIO(bytes(buffer)), mode="r:") as tar:
            member = tar.next()
            content = tar.extractfile(member) if member is not None and member.isfile() else None
            if content is None:
                raise ProviderError(f"{full} is not a regular file")
            return content.read()

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        if not files:
            return
        containers = self._containers
        resolved = {containers.resolve(ref, path): data for path, data in files.items()}
        # One exec creates every missing parent as the sandbox user (put_archive would make them as
        # root), then one archive rooted at HOME carries every file.
        parents = sorted({posixpath.dirname(full) for full in resolved})
        made = self._exec.run(ref, ["mkdir", "-p", "--", *parents], timeout=30, cwd=HOME)
        if made.exit_code != 0:
            raise ProviderError(
                f"cannot create the parents of the files in the sandbox: {made.stderr.strip()}"
            )

        import tarfile  # why: ~3 ms on every exec's start otherwise (measured); only file calls need it

        def members() -> Iterator[bytes]:
            now = int(time.time())
            for full, data in resolved.items():
                member = tarfile.TarInfo(posixpath.relpath(full, HOME))
                member.size, member.mode, member.mtime = len(data), 0o644, now
                member.uid = member.gid = SANDBOX_UID
                member.uname = member.gname = ""
                yield member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                yield data
                if pad := -len(data) % tarfile.BLOCKSIZE:
                    yield b"\0" * pad
            yield b"\0" * (2 * tarfile.BLOCKSIZE)

        with containers.errors(f"write {len(resolved)} files", ref):
            containers.client.api.put_archive(ref, HOME, b"".join(members()))

    def remove(self, ref: str, path: str) -> None:
        full = self._containers.resolve(ref, path)
        # rm -f is quiet about a missing path, which is success; as the sandbox user, so it can only
        # remove what the sandbox itself could.
        done = self._exec.run(ref, ["rm", "-rf", "--", full], timeout=120, cwd=HOME)
        if done.exit_code != 0:
            raise ProviderError(f"cannot remove {full} in the sandbox: {done.stderr.strip()}")

    def list_dir(self, ref: str, path: str) -> list[FileEntry]:
        full = self._containers.resolve_dir(ref, path)
        done = self._exec.run(ref, ["bash", "-c", _LIST_SCRIPT, "bash", full], timeout=60, cwd=HOME)
        _raise_for_path(done, full)
        if done.exit_code != 0 or done.truncated:
            detail = "the listing is too long" if done.truncated else done.stderr.strip()
            raise ProviderError(f"cannot list {full} in the sandbox: {detail}")
        return _parse_listing(done.stdout_bytes)

    def exists(self, ref: str, path: str) -> bool:
        full = self._containers.resolve_dir(ref, path)
        done = self._exec.run(ref, ["bash", "-c", "[[ -e $1 || -L $1 ]]", "bash", full], timeout=30, cwd=HOME)
        return done.exit_code == 0

    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport:
        # why: tree and archive (zstandard) cost every exec's start ~25 ms (measured); only transfers use them
        from sandbox_lifecycle.adapters.providers.tree import TransferCounter, pack_dir
        from sandbox_lifecycle.adapters.snapshots.archive import WorkspaceTooLarge

        containers = self._containers
        full = containers.resolve_dir(ref, remote_dir)
        counter = TransferCounter()
        chunks = pack_dir(local_dir, counter, owner=(SANDBOX_UID, SANDBOX_GID))
        made = self._exec.run(ref, ["mkdir", "-p", "--", full], timeout=30, cwd=HOME)
        if made.exit_code != 0:
            raise ProviderError(f"cannot create {full} in the sandbox: {made.stderr.strip()}")
        try:
            # A generator body goes out chunked: the engine reads it as it is made, nothing is buffered.
            with containers.errors(f"upload to {full}", ref):
                containers.client.api.put_archive(ref, full, chunks)
        except ProviderError as exc:
            if is_enospc(exc):
                raise WorkspaceTooLarge(
                    f"the upload to {full} does not fit the sandbox's {self._disk_limit_mb} MB disk"
                ) from exc
            raise
        return counter.report()

    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport:
        # why: tree and archive (zstandard) cost every exec's start ~25 ms (measured); only transfers use them
        from sandbox_lifecycle.adapters.providers.tree import extract_stream
        from sandbox_lifecycle.adapters.snapshots.archive import CHUNK

        containers = self._containers
        full = containers.resolve_dir(ref, remote_dir)
        containers.owned(ref)
        with containers.errors(f"download {full}", ref, missing_ok=True):
            chunks, _ = containers.client.api.get_archive(ref, full, chunk_size=CHUNK)
        with containers.errors(f"download {full}", ref):
            try:
                return extract_stream(chunks, local_dir, top=posixpath.basename(full))
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()


def _raise_for_path(done: ExecResult, full: str) -> None:
    if done.exit_code == 3:
        raise FileNotFoundError(f"{full} does not exist in the sandbox")
    if done.exit_code == 4:
        raise NotADirectoryError(f"{full} in the sandbox is not a directory")


def _parse_listing(raw: bytes) -> list[FileEntry]:
    entries = []
    for record in raw.split(b"\0"):
        if not record:
            continue
        kind, size, name = record.split(b"\t", 2)
        entries.append(
            FileEntry(
                name=name.decode("utf-8", errors="surrogateescape"),
                type=_FIND_TYPES.get(kind.decode(), "other"),
                size=int(size),
            )
        )
    return sorted(entries, key=lambda e: e.name)
