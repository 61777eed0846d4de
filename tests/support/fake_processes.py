"""The FakeProvider's background processes, ports and activity (a mixin of tests.support.fakes.FakeProvider).

Processes run on the host as the fake's execs do, in their own session, with output going to files
outside the instance's home (so a snapshot never holds them); suspend and destroy kill them, as Docker
does. Servers listen on the host, so ``url`` is a loopback address. Test knob: ``activity`` (ref ->
moment), what ``last_activity`` reports on top of the output files' modification times.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox_lifecycle.core.errors import ProcessNotFound
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import ProcessInfo, ProviderCapabilities

KILLED_STATUS = 137
# The variable the real providers mark each background process's tree with (adapters/providers/reap.py).
MARKER = "SANDBOX_LIFECYCLE_EXEC"


@dataclass
class _FakeProcess:
    info: ProcessInfo
    popen: subprocess.Popen[bytes]
    directory: Path
    killed: bool = False

    def status(self) -> ProcessInfo:
        code = self.popen.poll()
        if self.killed:
            code = KILLED_STATUS
        return ProcessInfo(
            self.info.id, self.info.command, self.info.cwd, running=code is None, exit_code=code
        )

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        # What left its session still carries the marker in its environment, as on the real providers.
        _kill_marked(f"{MARKER}=proc-{self.info.id}".encode())
        self.popen.wait(timeout=10)


def _kill_marked(marker: bytes) -> None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read


class FakeProcesses:
    capabilities = ProviderCapabilities(
        isolation="none", pause_keeps_processes=False, egress_allow_list=False, ports=True, checkpoints=True
    )

    # Provided by FakeProvider.
    engine: Any
    deployment: str

    def _inst(self, ref: str) -> Any: ...
    def _call(self, op: str, sid: str) -> None: ...
    def _host(self, inst: Any, path: str, *, allow_home: bool = False) -> Path: ...

    def _init_processes(self) -> None:
        # ref -> process id -> process, every process this provider started.
        self.background: dict[str, dict[str, _FakeProcess]] = {}
        self.activity: dict[str, datetime] = {}

    def start(
        self,
        ref: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ProcessInfo:
        if not command:
            raise ValueError("start needs a command")
        inst = self._inst(ref)
        self._call("start", inst.sandbox_id)
        where = cwd or kind_spec(inst.kind).workdir
        workdir = self._host(inst, where, allow_home=True)
        pid = f"{time.time_ns() // 1_000_000:011x}{uuid.uuid4().hex[:4]}"
        directory = Path(self.engine.root) / "processes" / self.deployment / ref / pid
        directory.mkdir(parents=True)
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(inst.home),
            **(env or {}),
            MARKER: f"proc-{pid}",
        }
        with (directory / "stdout").open("wb") as out, (directory / "stderr").open("wb") as err:
            try:
                popen = subprocess.Popen(
                    list(command),
                    cwd=workdir,
                    env=environ,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except FileNotFoundError:
                err.write(f"{command[0]}: command not found\n".encode())
                popen = subprocess.Popen(["sh", "-c", "exit 127"])
        info = ProcessInfo(pid, tuple(command), where, running=True)
        self.background.setdefault(ref, {})[pid] = _FakeProcess(info, popen, directory)
        return info

    def processes(self, ref: str) -> list[ProcessInfo]:
        self._inst(ref)
        return [p.status() for _, p in sorted(self.background.get(ref, {}).items())]

    def _process(self, ref: str, pid: str) -> _FakeProcess:
        inst = self._inst(ref)
        proc = self.background.get(ref, {}).get(pid)
        if proc is None:
            raise ProcessNotFound(inst.sandbox_id, pid)
        return proc

    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]:
        proc = self._process(ref, pid)
        return (proc.directory / "stdout").read_bytes(), (proc.directory / "stderr").read_bytes()

    def wait_process(self, ref: str, pid: str, timeout: float) -> int:
        proc = self._process(ref, pid)
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"background process {pid} still runs after {timeout:g}s") from None
        code = proc.status().exit_code
        assert code is not None
        return code

    def kill_process(self, ref: str, pid: str) -> None:
        self._process(ref, pid).kill()

    def url(self, ref: str, port: int) -> str:
        self._inst(ref)
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port!r}")
        return f"http://127.0.0.1:{port}"

    def last_activity(self, ref: str) -> datetime | None:
        self._inst(ref)
        moments = [
            datetime.fromtimestamp((p.directory / name).stat().st_mtime, UTC)
            for p in self.background.get(ref, {}).values()
            for name in ("stdout", "stderr")
        ]
        if ref in self.activity:
            moments.append(self.activity[ref])
        return max(moments, default=None)

    def _stop_processes(self, ref: str) -> None:
        for proc in self.background.pop(ref, {}).values():
            proc.kill()
