"""The data-plane calls both providers pass through to their parts, written once.

A provider keeps its exec client, its files and its background processes in parts of their own
(``exec.py``, ``files.py``, ``processes.py`` of its folder); the port's methods that only forward to
them live here, so each provider holds only what differs (its lifecycle, ``url``, its activity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from sandbox_lifecycle.core.ports import ExecResult, FileEntry, OutputCallback, ProcessInfo, TransferReport


class ExecPart(Protocol):
    def run(
        self,
        ref: str,
        command: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None,
        cwd: str | None,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        max_output_bytes: int | None,
    ) -> ExecResult: ...


class FilesPart(Protocol):
    def write_file(self, ref: str, path: str, data: bytes) -> None: ...
    def read_file(self, ref: str, path: str) -> bytes: ...
    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None: ...
    def remove(self, ref: str, path: str) -> None: ...
    def list_dir(self, ref: str, path: str) -> list[FileEntry]: ...
    def exists(self, ref: str, path: str) -> bool: ...
    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport: ...
    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport: ...


class ProcessesPart(Protocol):
    def start(
        self, ref: str, command: Sequence[str], *, env: Mapping[str, str] | None, cwd: str | None
    ) -> ProcessInfo: ...
    def processes(self, ref: str) -> list[ProcessInfo]: ...
    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]: ...
    def wait_process(self, ref: str, pid: str, timeout: float) -> int: ...
    def kill_process(self, ref: str, pid: str) -> None: ...
    def last_activity(self, ref: str) -> datetime | None: ...


class DelegatingCalls:
    """Exec, files and background processes of the SandboxProvider port, forwarded to the parts a
    provider sets in its constructor."""

    _exec: ExecPart
    _files: FilesPart
    _processes: ProcessesPart

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        return self._exec.run(
            ref,
            command,
            timeout=timeout,
            env=env,
            cwd=cwd,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            max_output_bytes=max_output_bytes,
        )

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        self._files.write_file(ref, path, data)

    def read_file(self, ref: str, path: str) -> bytes:
        return self._files.read_file(ref, path)

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        self._files.write_files(ref, files)

    def remove(self, ref: str, path: str) -> None:
        self._files.remove(ref, path)

    def list_dir(self, ref: str, path: str) -> list[FileEntry]:
        return self._files.list_dir(ref, path)

    def exists(self, ref: str, path: str) -> bool:
        return self._files.exists(ref, path)

    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport:
        return self._files.upload_dir(ref, local_dir, remote_dir)

    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport:
        return self._files.download_dir(ref, remote_dir, local_dir)

    def start(
        self,
        ref: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ProcessInfo:
        return self._processes.start(ref, command, env=env, cwd=cwd)

    def processes(self, ref: str) -> list[ProcessInfo]:
        return self._processes.processes(ref)

    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]:
        return self._processes.process_output(ref, pid)

    def wait_process(self, ref: str, pid: str, timeout: float) -> int:
        return self._processes.wait_process(ref, pid, timeout)

    def kill_process(self, ref: str, pid: str) -> None:
        self._processes.kill_process(ref, pid)

    def last_activity(self, ref: str) -> datetime | None:
        return self._processes.last_activity(ref)
