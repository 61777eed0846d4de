"""Background processes in a Docker sandbox (the DockerProvider's ``start``, ``processes``... calls).

A process is launched by an exec of its own that returns at once, leaving a supervisor running with the
command's output going to files under /tmp (see ``background``): the output outlives the backend process
and is lost with the container, which is how suspend and destroy stop every background process.

Every exec's wrapper kills what that exec left behind (``_EXEC_WRAPPER`` in exec.py), by the exec's
marker variable. A background process carries a marker of its own (``proc-<id>``), never an exec's, so no
exec's cleanup touches it, and ``kill_process`` reaps exactly its processes with the same machinery.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime

from sandbox_lifecycle.adapters.providers import background as bg
from sandbox_lifecycle.adapters.providers.docker.containers import SANDBOX_USER, Containers, DockerLimits
from sandbox_lifecycle.adapters.providers.docker.exec import ContainerExec
from sandbox_lifecycle.adapters.providers.reap import EXEC_MARKER
from sandbox_lifecycle.core.errors import ProcessNotFound, ProviderError
from sandbox_lifecycle.core.ports import ProcessInfo

# On the container's tmpfs: never part of a snapshot, gone with the container.
ROOT = "/tmp/.sandbox-lifecycle/processes"
# Bounds the short scripts (listing, reading output, marking a kill).
_SCRIPT_TIMEOUT_S = 30.0


class DockerProcesses:
    def __init__(self, containers: Containers, execs: ContainerExec, limits: DockerLimits) -> None:
        self._containers = containers
        self._exec = execs
        self._limits = limits

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
        bad = [k for k in env or {} if not k or "=" in k]
        if bad:
            raise ValueError(f"invalid environment variable names: {bad!r}")
        pid = bg.new_process_id()
        workdir = cwd or self._containers.workdir(ref)  # also verifies the container is ours
        environment = [f"{k}={v}" for k, v in (env or {}).items() if k != EXEC_MARKER]
        environment.append(f"{EXEC_MARKER}=proc-{pid}")
        argv = ["bash", "-c", bg.LAUNCH, "launch", bg.SUPERVISE, f"{ROOT}/{pid}", *command]
        api = self._containers.client.api
        with self._containers.errors("start a background process", ref):
            exec_id = api.exec_create(ref, argv, user=SANDBOX_USER, environment=environment, workdir=workdir)[
                "Id"
            ]
            said = api.exec_start(exec_id)
        code = self._exec.exit_code(exec_id)
        if code != 0:
            text = said.decode("utf-8", "replace").strip() if isinstance(said, bytes) else ""
            raise ProviderError(
                f"could not start {shlex.join(command)!r} in container {ref[:12]} (status {code}): {text}"
            )
        return ProcessInfo(pid, tuple(command), workdir, running=True)

    def processes(self, ref: str) -> list[ProcessInfo]:
        done = self._script(ref, bg.LIST, ROOT)
        return bg.parse_listing(done)

    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]:
        limit = self._limits.max_output_bytes
        return bg.parse_output(self._script(ref, bg.OUTPUT, self._dir(pid), str(limit), pid=pid))

    def wait_process(self, ref: str, pid: str, timeout: float) -> int:
        tenths = max(0, int(timeout * 10))
        result = self._exec.run(
            ref,
            ["bash", "-c", bg.WAIT, "wait", self._dir(pid), str(tenths)],
            timeout=timeout + _SCRIPT_TIMEOUT_S,
        )
        if result.exit_code == 3:
            raise ProcessNotFound(ref[:12], pid)
        if result.exit_code == 4:
            raise TimeoutError(f"background process {pid} still runs after {timeout:g}s")
        return int(result.stdout.strip())

    def kill_process(self, ref: str, pid: str) -> None:
        directory = self._dir(pid)
        self._exec.kill_marked(ref, f"proc-{pid}")
        self._script(ref, bg.MARK_KILLED, directory, pid=pid)

    def last_activity(self, ref: str) -> datetime | None:
        return bg.parse_last_output(self._script(ref, bg.LAST_OUTPUT, ROOT))

    def _dir(self, pid: str) -> str:
        if not bg.valid_process_id(pid):
            raise ProcessNotFound("this sandbox", pid)
        return f"{ROOT}/{pid}"

    def _script(self, ref: str, script: str, *args: str, pid: str | None = None) -> bytes:
        # Room for both streams' bytes (OUTPUT prints up to the bound of each, and a header).
        bound = 2 * self._limits.max_output_bytes + 1024
        result = self._exec.run(
            ref, ["bash", "-c", script, "script", *args], timeout=_SCRIPT_TIMEOUT_S, max_output_bytes=bound
        )
        if result.exit_code == 3 and pid is not None:
            raise ProcessNotFound(ref[:12], pid)
        if result.exit_code != 0:
            raise ProviderError(f"background processes of container {ref[:12]}: {result.stderr.strip()}")
        return result.stdout_bytes
