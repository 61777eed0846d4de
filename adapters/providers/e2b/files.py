"""Files in an E2B sandbox (the E2BProvider's ``write_file``, ``read_file``, ``list_dir``... calls).

Single files go through envd's filesystem API, retried where a repeat is harmless (reads, whole-file
writes). A directory has no transfer of its own in E2B: it travels as one streamed tar file, packed or
extracted inside the sandbox by the sandbox user (see ``upload_dir``).
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from collections.abc import Mapping

import httpx
from e2b import (
    FileNotFoundException,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
)
from e2b.sandbox.filesystem.filesystem import SyncWriteEntry

from sandbox_lifecycle.adapters.providers.e2b.exec import E2BExec
from sandbox_lifecycle.adapters.providers.e2b.retry import describe, provider_error
from sandbox_lifecycle.adapters.providers.e2b.sandboxes import E2BSandboxes, Handle
from sandbox_lifecycle.adapters.providers.tree import TransferCounter, extract_stream, pack_dir
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.kinds import HOME
from sandbox_lifecycle.core.ports import FileEntry, TransferReport

log = logging.getLogger(__name__)

_ENTRY_TYPES = {FileType.FILE: "file", FileType.DIR: "dir", FileType.SYMLINK: "symlink"}
# The sandbox user (uid/gid 1000 in both templates) owns every member of an upload.
_SANDBOX_OWNER = (1000, 1000)
# Bounds a directory's pack or unpack inside the sandbox.
_TRANSFER_TIMEOUT_S = 1800.0
# $1: the uploaded tar, $2: the target directory, both relative to HOME. The sandbox user extracts, so
# it owns what is written; the tar was built by pack_dir (no setuid bits, no devices, links inside).
_UNTAR_SCRIPT = 'mkdir -p -- "$2" && tar -x --no-same-owner -f "$1" -C "$2"'
# $1: the tar to write, $2: the directory to pack; exit 3: nothing there, 4: not a directory.
_TAR_SCRIPT = r"""
[[ -e $2 || -L $2 ]] || exit 3
[[ -d $2 ]] || exit 4
exec tar -c -f "$1" --exclude="${1##*/}" -C "$2" .
"""


class E2BFiles:
    def __init__(self, sandboxes: E2BSandboxes, execs: E2BExec) -> None:
        self._sandboxes = sandboxes
        self._exec = execs
        self._settings = sandboxes.settings

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        handle = self._sandboxes.handle(ref)
        path = _resolve(handle, path)
        # A whole-file write is idempotent, so it is as safe to repeat as a read.
        self._sandboxes.retrying(
            f"write {path} in {ref}", lambda: handle.sandbox.files.write(path, data, user=self._settings.user)
        )

    def read_file(self, ref: str, path: str) -> bytes:
        handle = self._sandboxes.handle(ref)
        path = _resolve(handle, path)
        limit = self._settings.max_file_bytes

        def read() -> bytes:
            chunks: list[bytes] = []
            size = 0
            with handle.sandbox.files.read(path, format="stream", user=self._settings.user) as stream:
                for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise ProviderError(f"{path} in E2B sandbox {ref} is larger than {limit} bytes")
                    chunks.append(chunk)
            return b"".join(chunks)

        try:
            return self._sandboxes.retrying(f"read {path} in {ref}", read, (FileNotFoundException,))
        except FileNotFoundException as e:
            raise FileNotFoundError(f"{path} does not exist in E2B sandbox {ref}") from e

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        if not files:
            return
        handle = self._sandboxes.handle(ref)
        entries = [SyncWriteEntry(path=_resolve(handle, path), data=data) for path, data in files.items()]
        # One multipart request for all of them; whole-file writes, so as safe to repeat as one.
        self._sandboxes.retrying(
            f"write {len(entries)} files in {ref}",
            lambda: handle.sandbox.files.write_files(entries, user=self._settings.user),
        )

    def remove(self, ref: str, path: str) -> None:
        handle = self._sandboxes.handle(ref)
        full = _resolve(handle, path)
        try:
            self._sandboxes.retrying(
                f"remove {full} in {ref}",
                lambda: handle.sandbox.files.remove(full, user=self._settings.user),
                (NotFoundException,),
            )
        except NotFoundException:
            return  # gone already is what the caller asked for

    def list_dir(self, ref: str, path: str) -> list[FileEntry]:
        handle = self._sandboxes.handle(ref)
        full = _resolve_dir(handle, path)
        try:
            found = self._sandboxes.retrying(
                f"list {full} in {ref}",
                lambda: handle.sandbox.files.list(full, depth=1, user=self._settings.user),
                (NotFoundException, InvalidArgumentException),
            )
        except NotFoundException as e:
            raise FileNotFoundError(f"{full} does not exist in E2B sandbox {ref}") from e
        except InvalidArgumentException as e:
            raise NotADirectoryError(f"{full} in E2B sandbox {ref} is not a directory") from e
        entries = [
            FileEntry(name=e.name, type=_ENTRY_TYPES.get(e.type, "other") if e.type else "other", size=e.size)
            for e in found
        ]
        return sorted(entries, key=lambda e: e.name)

    def exists(self, ref: str, path: str) -> bool:
        handle = self._sandboxes.handle(ref)
        full = _resolve_dir(handle, path)
        return self._sandboxes.retrying(
            f"stat {full} in {ref}", lambda: handle.sandbox.files.exists(full, user=self._settings.user)
        )

    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport:
        """E2B has no directory transfer: the tar goes up as one streamed file, and the sandbox user
        extracts it with ``tar``, so everything it writes is theirs. Plain tar, not zstd: nothing is
        assumed of the template beyond GNU tar, and workspaces of generated or binary files gain little.

        Paths in the command are relative to HOME (its cwd): the temporary file lives there, not in
        /tmp, so the extraction never depends on where the sandbox mounts its tmpfs."""
        handle = self._sandboxes.handle(ref)
        full = _resolve_dir(handle, remote_dir)
        counter = TransferCounter()
        chunks = pack_dir(local_dir, counter, owner=_SANDBOX_OWNER)
        staged = f".sandbox-lifecycle-upload-{uuid.uuid4().hex}.tar"
        try:
            try:
                # A stream is sent as it is read (octet-stream, chunked); never retried: it is consumed.
                handle.sandbox.files.write(f"{HOME}/{staged}", chunks, user=self._settings.user)
            except SandboxException as e:
                raise provider_error(f"uploading to {full} in E2B sandbox {ref} failed", e) from e
            done = self._exec.run(
                ref,
                ["bash", "-c", _UNTAR_SCRIPT, "bash", staged, posixpath.relpath(full, HOME)],
                timeout=_TRANSFER_TIMEOUT_S,
                cwd=HOME,
            )
            if done.exit_code != 0:
                raise ProviderError(
                    f"extracting the upload to {full} in E2B sandbox {ref} failed: {done.stderr}"
                )
        finally:
            self._remove_quietly(handle, staged)
        return counter.report()

    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport:
        """``tar -c`` into a temporary file in the sandbox, then one streamed read of it. The stream is
        the sandbox's to forge (it could swap the file), so ``extract_stream`` trusts none of it."""
        handle = self._sandboxes.handle(ref)
        full = _resolve_dir(handle, remote_dir)
        staged = f".sandbox-lifecycle-download-{uuid.uuid4().hex}.tar"
        try:
            done = self._exec.run(
                ref,
                ["bash", "-c", _TAR_SCRIPT, "bash", staged, posixpath.relpath(full, HOME)],
                timeout=_TRANSFER_TIMEOUT_S,
                cwd=HOME,
            )
            if done.exit_code == 3:
                raise FileNotFoundError(f"{full} does not exist in E2B sandbox {ref}")
            if done.exit_code == 4:
                raise NotADirectoryError(f"{full} in E2B sandbox {ref} is not a directory")
            # GNU tar exits 1 when a file changed while it was read; the archive is still whole.
            if done.exit_code not in (0, 1):
                raise ProviderError(f"packing {full} in E2B sandbox {ref} failed: {done.stderr}")
            try:
                stream = handle.sandbox.files.read(
                    f"{HOME}/{staged}", format="stream", user=self._settings.user
                )
            except SandboxException as e:
                raise provider_error(f"downloading {full} from E2B sandbox {ref} failed", e) from e
            with stream:
                try:
                    return extract_stream(stream, local_dir, top=".")
                except (SandboxException, httpx.HTTPError) as e:
                    raise provider_error(f"downloading {full} from E2B sandbox {ref} failed", e) from e
        finally:
            self._remove_quietly(handle, staged)

    def _remove_quietly(self, handle: Handle, staged: str) -> None:
        try:
            handle.sandbox.files.remove(f"{HOME}/{staged}", user=self._settings.user)
        except NotFoundException:
            pass
        except Exception as e:  # a leftover in the home, not a failed transfer
            log.warning("e2b: could not remove the transfer file %s: %s", staged, describe(e))


def _resolve(handle: Handle, path: str) -> str:
    """An absolute path under HOME: relative paths start at the kind's workdir (envd would resolve them
    against the user's home), as the Docker provider does; escapes are refused."""
    full = posixpath.normpath(posixpath.join(handle.workdir or HOME, path))
    if not full.startswith(HOME + "/"):
        raise ValueError(f"path {path!r} is outside the sandbox home {HOME}")
    return full


def _resolve_dir(handle: Handle, path: str) -> str:
    """Like ``_resolve``, HOME itself allowed (listing or copying the whole home is fine)."""
    full = posixpath.normpath(posixpath.join(handle.workdir or HOME, path))
    return full if full == HOME else _resolve(handle, path)
