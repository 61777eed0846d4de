"""One command in an E2B sandbox, as E2BProvider.exec runs it: through envd, as the configured user, with
the sandbox's gateway env, within its deadline (killed past it), its output bounded and streamed."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from e2b import (
    CommandExitException,
    SandboxException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    TimeoutException,
)

from sandbox_lifecycle.adapters.providers.e2b.gateway import ModelGateway
from sandbox_lifecycle.adapters.providers.e2b.retry import describe, provider_error
from sandbox_lifecycle.adapters.providers.e2b.sandboxes import E2BSandboxes
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.ports import ExecResult, OutputCallback
from sandbox_lifecycle.core.streaming import OutputCollector


class E2BExec:
    def __init__(self, sandboxes: E2BSandboxes, gateway: ModelGateway) -> None:
        self._sandboxes = sandboxes
        self._gateway = gateway
        self._settings = sandboxes.settings

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
        if timeout <= 0:
            raise ValueError(f"exec timeout must be positive, got {timeout!r}")
        handle = self._sandboxes.handle(ref)
        env = self._gateway.command_env(ref, env)
        cmd = shlex.join(command)
        workdir = cwd or handle.workdir
        limit = self._settings.max_output_bytes if max_output_bytes is None else max_output_bytes
        # The SDK hands over decoded text as each process event arrives (in its reading thread).
        output = OutputCollector(limit, on_stdout, on_stderr)
        try:
            # Started in the background so we hold the pid: E2B's `timeout` only drops our stream, the
            # command would run on in the sandbox unless we kill it.
            process = handle.sandbox.commands.run(
                cmd,
                background=True,
                envs=dict(env) if env else None,
                cwd=workdir,
                user=self._settings.user,
                timeout=timeout,
                retain_output=False,
            )
        except (SandboxNotRunningException, SandboxUnreachableException) as e:
            self._sandboxes.forget(ref)
            raise ProviderError(f"E2B sandbox {ref} is not reachable to run {cmd!r}: {describe(e)}") from e
        except TimeoutException as e:
            raise ProviderError(
                f"command {cmd!r} did not start in E2B sandbox {ref} within {timeout:g}s; "
                "whether it runs is unknown"
            ) from e
        except SandboxException as e:
            raise provider_error(f"E2B sandbox {ref} refused to run {cmd!r}", e) from e
        try:
            process.wait(
                on_stdout=lambda text: output.add_stdout(text.encode()),
                on_stderr=lambda text: output.add_stderr(text.encode()),
            )
            exit_code = 0
        except CommandExitException as e:
            exit_code = e.exit_code
        except (SandboxNotRunningException, SandboxUnreachableException) as e:
            self._sandboxes.forget(ref)
            raise ProviderError(f"E2B sandbox {ref} went away while running {cmd!r}: {describe(e)}") from e
        except TimeoutException as e:
            try:
                self._sandboxes.retrying(
                    f"kill pid {process.pid} in {ref}", lambda: handle.sandbox.commands.kill(process.pid)
                )
            except Exception as kill_error:
                raise ProviderError(
                    f"command {cmd!r} timed out after {timeout:g}s in E2B sandbox {ref} and could not be "
                    f"killed ({describe(kill_error)}); it may still be running"
                ) from e
            raise output.timed_out(cmd, timeout) from e
        except SandboxException as e:
            raise provider_error(f"running {cmd!r} in E2B sandbox {ref} failed", e) from e
        return output.result(exit_code)
