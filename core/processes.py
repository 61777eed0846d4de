"""The handle of a background process (``sbx.start(cmd)``), and the record of one a suspend stopped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sandbox_lifecycle.core.errors import ProcessNotFound
from sandbox_lifecycle.core.ports import ProcessInfo
from sandbox_lifecycle.events.values import FieldValues, value_class

# Process/handle calls wait this long by default (an exec's default timeout).
DEFAULT_WAIT_S = 300.0


@value_class
class ProcessLogs(FieldValues):
    """What a background process printed so far (the newest bytes, bounded like an exec's output)."""

    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")


class ProcessCalls(Protocol):
    """What a handle asks of the service (``SandboxService`` is one), named here so this module does not
    import the service that hands the handles out."""

    def processes(self, sandbox_id: str) -> list[ProcessInfo]: ...

    def process_logs(self, sandbox_id: str, pid: str) -> ProcessLogs: ...

    def wait_process(self, sandbox_id: str, pid: str, timeout: float = ...) -> int: ...

    def kill_process(self, sandbox_id: str, pid: str) -> None: ...


@value_class
class Process(FieldValues):
    """A background process of a sandbox. Every call goes through the service, so it resumes a suspended
    sandbox like any call does (where the suspend stopped the process, it is then gone: ProcessNotFound)."""

    service: ProcessCalls
    sandbox_id: str
    info: ProcessInfo

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def command(self) -> tuple[str, ...]:
        return self.info.command

    def logs(self) -> ProcessLogs:
        return self.service.process_logs(self.sandbox_id, self.id)

    def wait(self, timeout: float = DEFAULT_WAIT_S) -> int:
        """The exit code; TimeoutError when it still runs after ``timeout`` seconds (it keeps running)."""
        return self.service.wait_process(self.sandbox_id, self.id, timeout)

    def kill(self) -> None:
        self.service.kill_process(self.sandbox_id, self.id)

    def status(self) -> ProcessInfo:
        for found in self.service.processes(self.sandbox_id):
            if found.id == self.id:
                return found
        raise ProcessNotFound(self.sandbox_id, self.id)


def as_record(info: ProcessInfo) -> dict[str, Any]:
    """How a running process is recorded on SuspendRequested/Suspended."""
    return {"id": info.id, "command": list(info.command), "cwd": info.cwd}


def from_record(record: Mapping[str, Any]) -> ProcessInfo:
    """A recorded process as a ProcessInfo (not running: the suspend stopped it)."""
    command = record.get("command")
    return ProcessInfo(
        id=str(record.get("id", "")),
        command=tuple(str(c) for c in command) if isinstance(command, list) else (),
        cwd=str(record.get("cwd", "")),
        running=False,
    )
