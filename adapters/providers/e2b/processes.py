"""Background processes and ports in an E2B sandbox (the E2BProvider's ``start``, ``processes``, ``url``...).

A process is an envd command started with ``commands.run(background=True)`` whose stream is dropped at
once (envd keeps the command running): a supervising bash (see ``background``) that runs the command
with its output going to files under the home, so the output outlives the backend process that started
it and, like the process itself, E2B's pause (a memory snapshot) keeps it. ``commands.list()`` finds the
envd pid of a running one (by its directory in the command line), which ``commands.connect()`` waits on
and ``commands.kill()`` kills; the files answer for the ones that ended.

Paths are relative to the home (the scripts run there, and the supervisor gets ``$HOME/...``), never
absolute: nothing is assumed of where the template mounts what.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import urlsplit

from e2b import CommandExitException, SandboxException, TimeoutException

from sandbox_lifecycle.adapters.providers import background as bg
from sandbox_lifecycle.adapters.providers.e2b.exec import E2BExec
from sandbox_lifecycle.adapters.providers.e2b.gateway import ModelGateway
from sandbox_lifecycle.adapters.providers.e2b.sandboxes import E2BSandboxes
from sandbox_lifecycle.adapters.providers.reap import EXEC_MARKER, KILL_MARKED_SCRIPT
from sandbox_lifecycle.core.errors import ProcessNotFound, ProviderError
from sandbox_lifecycle.core.kinds import HOME
from sandbox_lifecycle.core.ports import ProcessInfo
from sandbox_lifecycle.core.preview import Preview

# Relative to HOME. In the home, so a pause keeps it with the processes.
ROOT = ".sandbox-lifecycle/processes"
# The header E2B's edge wants on requests to a sandbox's ports when public traffic is off.
TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"
_SCRIPT_TIMEOUT_S = 30.0


class E2BProcesses:
    def __init__(self, sandboxes: E2BSandboxes, gateway: ModelGateway, execs: E2BExec) -> None:
        self._sandboxes = sandboxes
        self._gateway = gateway
        self._exec = execs
        self._settings = sandboxes.settings

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
        handle = self._sandboxes.handle(ref)
        workdir = cwd or handle.workdir or HOME
        pid = bg.new_process_id()
        # Its marker lets kill_process reap everything it started, whatever envd's kill reaches.
        envs = {k: v for k, v in (env or {}).items() if k != EXEC_MARKER}
        envs[EXEC_MARKER] = f"proc-{pid}"
        # `exec`: the envd process is the supervisor, so envd's pid, wait and kill are the supervisor's.
        line = (
            f"exec bash -c {shlex.quote(bg.SUPERVISE)} supervise "
            f'"$HOME"/{shlex.quote(self._rel(pid))} {shlex.join(command)}'
        )
        try:
            started = handle.sandbox.commands.run(
                line,
                background=True,
                envs=self._gateway.command_env(ref, envs),
                cwd=workdir,
                user=self._settings.user,
                timeout=0,
                retain_output=False,
            )
        except SandboxException as e:
            raise ProviderError(f"E2B sandbox {ref} refused to start {shlex.join(command)!r}: {e}") from e
        # envd keeps the command running without a listener; this process need not hold its stream.
        started.disconnect()
        return ProcessInfo(pid, tuple(command), workdir, running=True)

    def processes(self, ref: str) -> list[ProcessInfo]:
        found = {p.id: p for p in bg.parse_listing(self._script(ref, bg.LIST, ROOT))}
        # A supervisor that envd started has not always written its directory yet: its command line says.
        for pid, (_, command, cwd) in self._running(ref).items():
            if pid not in found:
                found[pid] = ProcessInfo(pid, command, cwd, running=True)
        return [found[k] for k in sorted(found)]

    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]:
        limit = self._settings.max_output_bytes
        return bg.parse_output(self._script(ref, bg.OUTPUT, self._rel(pid), str(limit), pid=pid))

    def wait_process(self, ref: str, pid: str, timeout: float) -> int:
        envd_pid = self._running(ref).get(pid, (None, (), ""))[0]
        if envd_pid is None:
            return self._status(ref, pid, timeout)
        handle = self._sandboxes.handle(ref)
        try:
            waited = handle.sandbox.commands.connect(envd_pid, timeout=timeout, retain_output=False)
            waited.wait()
            return 0
        except CommandExitException as e:
            return e.exit_code if e.exit_code >= 0 else self._status(ref, pid, 1.0)
        except TimeoutException as e:
            raise TimeoutError(f"background process {pid} still runs after {timeout:g}s") from e
        except SandboxException:
            # It ended between the listing and the connect: its status is in its directory.
            return self._status(ref, pid, 1.0)

    def kill_process(self, ref: str, pid: str) -> None:
        envd_pid = self._running(ref).get(pid, (None, (), ""))[0]
        if envd_pid is not None:
            handle = self._sandboxes.handle(ref)
            self._sandboxes.retrying(
                f"kill process {pid} in {ref}", lambda: handle.sandbox.commands.kill(envd_pid)
            )
        # envd signals the supervisor; what the command started (a server's workers) goes by its marker.
        self._script(ref, KILL_MARKED_SCRIPT, f"proc-{pid}")
        self._script(ref, bg.MARK_KILLED, self._rel(pid), pid=pid)

    def last_activity(self, ref: str) -> datetime | None:
        return bg.parse_last_output(self._script(ref, bg.LAST_OUTPUT, ROOT))

    def url(self, ref: str, port: int) -> str:
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port!r}")
        host = self._sandboxes.handle(ref).sandbox.get_host(port)
        # E2B serves sandbox ports over TLS; a custom envd endpoint (E2B_SANDBOX_URL, a self-hosted or
        # loopback one) sets the scheme its proxy speaks.
        custom = self._settings.sandbox_url
        scheme = urlsplit(custom).scheme if custom else "https"
        return f"{scheme or 'https'}://{host}"

    def preview(self, ref: str, port: int) -> Preview:
        """The URL and the header E2B wants on every request to a port of a sandbox with public traffic
        off. The token comes with the create or connect answer (a lookup never shows it), so the
        handle holds it; a handle this process lacks is made by a connect, as for any call."""
        url = self.url(ref, port)
        token = self._sandboxes.handle(ref).sandbox.traffic_access_token
        return Preview(url, {TRAFFIC_TOKEN_HEADER: token} if token else {})

    # --- internals ----------------------------------------------------------------------------------------

    @staticmethod
    def _rel(pid: str) -> str:
        if not bg.valid_process_id(pid):
            raise ProcessNotFound("this sandbox", pid)
        return f"{ROOT}/{pid}"

    def _running(self, ref: str) -> dict[str, tuple[int, tuple[str, ...], str]]:
        """Our running supervisors by process id: (envd pid, command, cwd), from ``commands.list()``."""
        handle = self._sandboxes.handle(ref)
        listed = self._sandboxes.retrying(f"list processes in {ref}", lambda: handle.sandbox.commands.list())
        running: dict[str, tuple[int, tuple[str, ...], str]] = {}
        for proc in listed:
            line = proc.args[-1] if proc.args else ""
            marker = f'"$HOME"/{ROOT}/'
            if marker not in line:
                continue
            try:
                words = shlex.split(line.split(marker, 1)[1])
            except ValueError:
                continue
            if words and bg.valid_process_id(words[0]):
                running[words[0]] = (proc.pid, tuple(words[1:]), proc.cwd or "")
        return running

    def _status(self, ref: str, pid: str, timeout: float) -> int:
        """The status recorded in the process's directory, waiting up to ``timeout`` for it."""
        done = self._exec.run(
            ref,
            ["bash", "-c", bg.WAIT, "wait", self._rel(pid), str(max(0, int(timeout * 10)))],
            timeout=timeout + _SCRIPT_TIMEOUT_S,
            cwd=HOME,
        )
        if done.exit_code == 3:
            raise ProcessNotFound(ref, pid)
        if done.exit_code == 4:
            raise TimeoutError(f"background process {pid} still runs after {timeout:g}s")
        return int(done.stdout.strip())

    def _script(self, ref: str, script: str, *args: str, pid: str | None = None) -> bytes:
        bound = 2 * self._settings.max_output_bytes + 1024
        done = self._exec.run(
            ref,
            ["bash", "-c", script, "script", *args],
            timeout=_SCRIPT_TIMEOUT_S,
            cwd=HOME,
            max_output_bytes=bound,
        )
        if done.exit_code == 3 and pid is not None:
            raise ProcessNotFound(ref, pid)
        if done.exit_code != 0:
            raise ProviderError(f"background processes of E2B sandbox {ref}: {done.stderr.strip()}")
        return done.stdout_bytes
