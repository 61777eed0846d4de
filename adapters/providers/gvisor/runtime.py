"""Is gVisor's ``runsc`` registered with the Docker engine, and which version: the gvisor provider's
start-up refusal and its doctor check.

Both read the engine's ``docker info`` (its ``Runtimes``): the engine, not this host, runs the sandboxes,
and a runtime is usable only once the engine's configuration names it. The version comes from the
registered binary (``runsc --version``), which this host can run only when the engine is local; a remote
engine's is reported as unknown. Nothing here creates anything on the engine.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandbox_lifecycle.core.errors import ProviderError, ProviderRefused

if TYPE_CHECKING:
    import docker

# The name the runtime is registered under in the engine's configuration, and what containers ask for.
RUNTIME = "runsc"
# The runsc flag the engine must pass. runsc's own network stack fails on kernels like the one this was
# measured on (`cannot run with network enabled in root network namespace`); with --network=host it uses
# the namespace the engine made for the container: the sandbox's internal network, never the host's.
RUNTIME_ARGS = ("--network=host",)
_VERSION_TIMEOUT_S = 5.0

INSTALL_HINT = (
    "install gVisor on the engine's host (Debian: `apt-get install runsc`; a production host should run a "
    "current release from gvisor.dev), register it in the engine's daemon.json as "
    '"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}}, '
    "then restart the engine (docs/gvisor.md)"
)


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    """What the engine says about ``runsc``: registered or not, where, with which flags, which version."""

    present: bool
    path: str | None = None
    args: tuple[str, ...] = ()
    version: str | None = None  # first line of `runsc --version`; None when the binary is not on this host

    @property
    def detail(self) -> str:
        if not self.present:
            return f"the engine has no {RUNTIME!r} runtime registered"
        version = self.version or "version unknown (the binary is not on this host)"
        flags = " ".join(self.args) or "no runtime arguments"
        return f"{RUNTIME} at {self.path} ({flags}): {version}"

    @property
    def fix(self) -> str | None:
        """What to do; None when nothing needs doing."""
        if not self.present:
            return INSTALL_HINT
        if not set(RUNTIME_ARGS) <= set(self.args):
            return (
                f"add {' '.join(RUNTIME_ARGS)} to the runtime's runtimeArgs in daemon.json and restart the "
                "engine: runsc's own network stack does not start on every kernel"
            )
        return None


def runtime_status(engine: docker.DockerClient | str | None = None) -> RuntimeStatus:
    """The ``runsc`` runtime as ``engine`` (a client, a DOCKER_HOST url, or None: the environment's)
    reports it. ProviderError when the engine cannot be asked."""
    info = _engine_info(engine)
    entry = (info.get("Runtimes") or {}).get(RUNTIME)
    if not isinstance(entry, dict):
        return RuntimeStatus(present=False)
    path = str(entry.get("path") or RUNTIME)
    args = tuple(str(a) for a in entry.get("runtimeArgs") or ())
    return RuntimeStatus(present=True, path=path, args=args, version=binary_version(path))


def preflight(engine: docker.DockerClient | str | None = None) -> None:
    """Raise ProviderRefused, naming how to install and register it, when the engine has no ``runsc``
    runtime: before the service writes anything, instead of at the first create."""
    status = runtime_status(engine)
    if not status.present:
        raise ProviderRefused(
            f"SANDBOX_PROVIDER=gvisor needs the Docker engine's {RUNTIME!r} runtime, which it does not "
            f"have (docker info lists no such runtime): {INSTALL_HINT}"
        )


def doctor_check(engine: docker.DockerClient | str | None = None) -> tuple[str, str, str | None]:
    """``sandboxctl doctor``'s runtime line as (status, detail, fix), status one of doctor's "ok", "warn",
    "fail": fail without runsc or without an engine to ask, warn when registered without --network=host."""
    try:
        status = runtime_status(engine)
    except ProviderError as exc:
        return "fail", str(exc), "start the Docker engine, or point DOCKER_HOST at one"
    if not status.present:
        return "fail", status.detail, status.fix
    return ("ok" if status.fix is None else "warn"), status.detail, status.fix


def binary_version(path: str) -> str | None:
    """The first line of ``<path> --version`` (``runsc version release-20240807.0``), or None when the
    binary is not on this host or does not answer."""
    if not os.path.isabs(path) or not os.access(path, os.X_OK):
        return None
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=_VERSION_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = done.stdout.strip().splitlines()[:1]
    return first[0] if done.returncode == 0 and first else None


def _engine_info(engine: docker.DockerClient | str | None) -> dict[str, Any]:
    # The SDK loads requests: a short CLI command that never builds the provider does without it.
    import docker
    import docker.errors
    import requests.exceptions

    try:
        if isinstance(engine, docker.DockerClient):
            return dict(engine.info())
        client = docker.DockerClient(base_url=engine) if engine else docker.from_env()
        try:
            info: dict[str, Any] = client.info()
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise ProviderError(
            f"the Docker engine is unreachable ({exc}); start it with `sudo scripts/start-docker.sh`, "
            "or set DOCKER_HOST"
        ) from exc
    return info
