"""The engine objects around Docker sandboxes (their networks, the egress point, port forwarders) as
network.py and egress_point.py reach them through the SDK: their labels, the calls both make with errors
mapped to ProviderError, and how every helper container is hardened.

Helpers carry no "managed" label, so they are never listed as sandbox instances.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import docker
import docker.errors
import requests.exceptions

from sandbox_lifecycle.adapters.providers.docker.containers import LABEL_DEPLOYMENT, LABEL_ID
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost

# What a network or helper container is for.
LABEL_ROLE = "sandbox-lifecycle.role"
LABEL_CONFIG = "sandbox-lifecycle.egress-config"
LABEL_TARGET = "sandbox-lifecycle.target"
ROLE_EGRESS, ROLE_NETWORK, ROLE_FORWARDER = "egress", "network", "forwarder"

# Where the egress package is mounted in a helper container, and its environment.
PACKAGE_MOUNT = "/opt/sandbox-lifecycle"
PYTHON_ENV = {"PYTHONPATH": PACKAGE_MOUNT, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
HELPER_USER = "1000:1000"
# How long a helper may take to come up, or to go.
READY_WAIT_S = 15.0


def hardened(memory_mb: int) -> dict[str, Any]:
    """The host config every helper container runs with, whatever it serves."""
    return {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,size=16m"},
        "pids_limit": 256,
        "mem_limit": memory_mb * 1024**2,
        "init": True,
        # Nothing arriving on one network is passed on to another, even if a sandbox could address it.
        "sysctls": {"net.ipv4.ip_forward": "0"},
    }


def role_labels(role: str, deployment: str, sandbox_id: str | None = None) -> dict[str, str]:
    labels = {LABEL_ROLE: role, LABEL_DEPLOYMENT: deployment}
    if sandbox_id is not None:
        labels[LABEL_ID] = sandbox_id
    return labels


class HelperCalls:
    """The SDK calls on helpers and networks, on the client ``client()`` returns (connected on first use)."""

    def __init__(self, client: Callable[[], docker.DockerClient]) -> None:
        self._client = client

    @property
    def api(self) -> Any:
        return self._client().api

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self.mapped(exc, action) from exc

    @staticmethod
    def mapped(exc: BaseException, action: str) -> ProviderError:
        if isinstance(exc, docker.errors.NotFound):
            return ProviderLost(f"{action}: not found")
        if isinstance(exc, docker.errors.APIError):
            return ProviderError(f"{action} failed: {exc.explanation or exc}")
        return ProviderError(f"{action}: the Docker engine is unreachable ({exc})")

    def inspect_container(self, name: str) -> dict[str, Any] | None:
        try:
            with self.errors(f"inspect container {name}"):
                found: dict[str, Any] = self.api.inspect_container(name)
                return found
        except ProviderLost:
            return None

    def inspect_network(self, name: str) -> dict[str, Any] | None:
        try:
            with self.errors(f"inspect network {name}"):
                found: dict[str, Any] = self.api.inspect_network(name)
                return found
        except ProviderLost:
            return None

    def remove_container(self, ref: str) -> None:
        with suppress(ProviderLost), self.errors(f"remove container {ref[:12]}"):
            self.api.remove_container(ref, v=True, force=True)

    def await_log(self, container: str, line: str, what: str) -> None:
        """Wait until the container's log shows ``line`` (it is ready), failing when it exits first."""
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            with self.errors(f"read the log of {what}"):
                logs = self.api.logs(container, stdout=True, stderr=True, tail=50)
                state = self.api.inspect_container(container)["State"]
            if line.encode() in logs:
                return
            if not state["Running"] and state["Status"] != "created":
                raise ProviderError(f"{what} exited: {logs.decode(errors='replace')[-500:].strip()}")
            time.sleep(0.05)
        raise ProviderError(f"{what} did not become ready within {READY_WAIT_S:g}s")
