"""One command in a Docker sandbox, as DockerProvider.exec runs it: as the sandbox user, under a wrapper
that reaps what the command left behind, within its deadline, its output bounded and streamed.

Every exec runs under ``_EXEC_WRAPPER``: when the command returns, whatever it left running in the
background (``cmd &``, a daemonized server) is killed too, by the exec's marker variable, so an exec that
returned leaves no process behind and its output stream closes. A command past its deadline is killed
the same way, from an exec of its own (``kill_marked``).
"""

from __future__ import annotations

import math
import shlex
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress

from sandbox_lifecycle.adapters.providers.docker.containers import SANDBOX_USER, Containers, DockerLimits
from sandbox_lifecycle.adapters.providers.docker.errors import mapped
from sandbox_lifecycle.adapters.providers.reap import EXEC_MARKER, REAP_FUNCTION
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.ports import ExecResult, OutputCallback
from sandbox_lifecycle.core.streaming import OutputCollector

# The kill after a timeout runs in an exec of its own, which carries no marker; the marker is its argument.
_KILL_MARKED_SCRIPT = REAP_FUNCTION + 'SANDBOX_LIFECYCLE_EXEC="$1" reap ""\n'
# The wrapper itself is spared until it exits with the command's status.
_EXEC_WRAPPER = REAP_FUNCTION + '"$@"; rc=$?; reap $$; exit $rc\n'
# `timeout` inside the container is a backstop for when this process dies mid-exec: the command still
# cannot outlive its deadline by more than this.
_BACKSTOP_GRACE_S = 5
# How long to wait for the output stream to close once the command's processes were killed.
_DRAIN_AFTER_KILL_S = 5.0
# How long the engine may take to report an exec's exit code after its stream closed.
_EXIT_CODE_WAIT_S = 5.0


class ContainerExec:
    """Runs commands in the containers of one deployment (each checked to be ours first)."""

    def __init__(self, containers: Containers, limits: DockerLimits) -> None:
        self._containers = containers
        self._limits = limits

    def run(
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
        if not command:
            raise ValueError("exec needs a command")
        if not timeout > 0:
            raise ValueError(f"exec timeout must be positive, got {timeout!r}")
        bad = [k for k in env or {} if not k or "=" in k]
        if bad:
            raise ValueError(f"invalid environment variable names: {bad!r}")
        marker = random_id()
        environment = [f"{k}={v}" for k, v in (env or {}).items() if k != EXEC_MARKER]
        environment.append(f"{EXEC_MARKER}={marker}")
        # timeout(1) stops parsing options at the duration, so a command starting with "-" stays a command.
        argv = [
            *("bash", "-c", _EXEC_WRAPPER, "bash"),
            *("timeout", "--signal=KILL", str(math.ceil(timeout) + _BACKSTOP_GRACE_S)),
            *command,
        ]
        containers = self._containers
        calls = containers.exec_calls
        workdir = cwd or containers.workdir(ref)  # also verifies the container is ours, before anything runs
        with containers.errors("exec", ref):
            exec_id = calls.exec_create(
                ref, argv, user=SANDBOX_USER, environment=environment, workdir=workdir
            )
            stream = calls.exec_stream(exec_id)

        limit = self._limits.max_output_bytes if max_output_bytes is None else max_output_bytes
        output = _BoundedOutput(limit, on_stdout, on_stderr)
        # A worker reads the stream so this thread can keep the deadline; the stream only yields when
        # the command writes, so a silent command would otherwise block us forever.
        reader = threading.Thread(
            target=output.drain, args=(stream,), name=f"exec-{exec_id[:12]}", daemon=True
        )
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self.kill_marked(ref, marker)
            reader.join(_DRAIN_AFTER_KILL_S)
            if reader.is_alive():  # something escaped the kill and holds the stream open: stop reading
                # (an SDK stream is a generator, which cannot be closed while the reader runs it: that
                # daemon reader is left behind then)
                with suppress(ValueError):
                    stream.close()
            raise output.timed_out(shlex.join(command), timeout)
        if output.error is not None:
            raise mapped(output.error, "exec", ref)
        return output.result(self.exit_code(exec_id))

    def kill_marked(self, ref: str, marker: str) -> None:
        """Kill every process that carries ``marker`` (an exec's, or a background process's)."""
        with self._containers.errors("kill timed-out command", ref):
            calls = self._containers.exec_calls
            exec_id = calls.exec_create(
                ref, ["bash", "-c", _KILL_MARKED_SCRIPT, "bash", marker], user=SANDBOX_USER
            )
            calls.exec_run(exec_id)

    def exit_code(self, exec_id: str) -> int:
        deadline = time.monotonic() + _EXIT_CODE_WAIT_S
        while True:
            with self._containers.errors("inspect exec"):
                state = self._containers.exec_calls.exec_inspect(exec_id)
            if not state["Running"] and state["ExitCode"] is not None:
                return int(state["ExitCode"])
            if time.monotonic() > deadline:
                raise ProviderError(f"the engine did not report the exit code of exec {exec_id[:12]}; retry")
            time.sleep(0.01)


class _BoundedOutput(OutputCollector):
    """Collects an exec's demultiplexed output, keeping at most ``limit`` bytes of each stream and
    handing every frame to the callbacks as it is read (in the reader thread)."""

    def __init__(
        self, limit: int, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> None:
        super().__init__(limit, on_stdout, on_stderr)
        self.error: BaseException | None = None

    def drain(self, frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
        # Past the limit the rest is still read (and streamed), so the command never blocks on a full pipe.
        try:
            for out, err in frames:
                self.add_stdout(out)
                self.add_stderr(err)
        except Exception as exc:  # handed to the caller's thread
            self.error = exc
