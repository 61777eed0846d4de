"""The egress container of one deployment (``sandbox-lifecycle-egress-<deployment>``): the sandboxes'
only way out. See docs/network.md for the picture.

It runs ``adapters/egress`` with the data-app image's python3, the package directory mounted read-only:
the proxy on 3128 enforcing each sandbox's allow-list, and the model-API gateway on 8081. It sits on the
default bridge for its own way out, and is connected to every sandbox network under the alias ``egress``.
It is started on first need by whichever process needs it (creation by name is the lock), replaced when
its program or configuration changes (keeping its networks), restarted when its proxy does not answer,
and lives on when the backend restarts; network.py removes it once no sandbox network is left.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
from docker.types import Mount

from sandbox_lifecycle.adapters.egress import probe as egress_probe
from sandbox_lifecycle.adapters.egress.main import PROXY_PORT, READY
from sandbox_lifecycle.adapters.providers.docker.bridge import DEFAULT_BRIDGE
from sandbox_lifecycle.adapters.providers.docker.containers import LABEL_DEPLOYMENT, labels_of
from sandbox_lifecycle.adapters.providers.docker.helpers import (
    LABEL_CONFIG,
    LABEL_ROLE,
    PACKAGE_MOUNT,
    PYTHON_ENV,
    READY_WAIT_S,
    ROLE_EGRESS,
    HelperCalls,
    hardened,
    role_labels,
)
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost, ProviderRefused

EGRESS_ALIAS = "egress"
# The engine's default bridge: the egress container's and forwarders' way out.
OUTSIDE_NETWORK = DEFAULT_BRIDGE
_PROBE_TIMEOUT_S = 2.0  # the proxy answers the health probe in about a millisecond when well


@dataclass(frozen=True, slots=True)
class EgressProbe:
    ok: bool
    detail: str


class EgressPoint:
    """The egress container of ``deployment``, made from ``image`` with ``package`` (the egress program's
    directory) mounted and ``state_dir`` (policies, tokens, the upstream) as its state."""

    def __init__(self, calls: HelperCalls, deployment: str, image: str, state_dir: str, package: str) -> None:
        self._calls = calls
        self.deployment = deployment
        self.image = image
        self.state_dir = state_dir
        self.package = package
        self.name = f"sandbox-lifecycle-egress-{deployment}"
        self._lock = threading.Lock()

    def package_mount(self) -> Mount:
        """The egress program, read-only, for any container that runs it."""
        return Mount(target=f"{PACKAGE_MOUNT}/egress", source=self.package, type="bind", read_only=True)

    def ensure(self) -> str:
        """The running egress container of this deployment (its id), started if need be."""
        calls = self._calls
        want = self._config()
        with self._lock:
            for _attempt in range(3):
                found = calls.inspect_container(self.name)
                if found is None:
                    created = self._create(want)
                    if created is not None:
                        return created
                    continue  # lost the name to another process: take theirs
                labels = labels_of(found)
                if labels.get(LABEL_ROLE) != ROLE_EGRESS or labels.get(LABEL_DEPLOYMENT) != self.deployment:
                    raise ProviderRefused(
                        f"a container named {self.name} exists that is not this deployment's egress "
                        "point; remove or rename it"
                    )
                if labels.get(LABEL_CONFIG) != want:
                    # Another version of the egress program or settings: replace it, keeping its networks.
                    created = self._replace(found, want)
                    if created is None:
                        continue
                    return created
                if found["State"].get("Status") == "removing":
                    self._await_gone(found["Id"])  # a sweep found it idle a moment ago: make a new one
                    continue
                if not found["State"]["Running"]:
                    try:
                        with calls.errors("start the egress container"):
                            calls.api.start(found["Id"])
                    except ProviderLost:
                        # A stopped container keeps its endpoints, but a network inspect does not list
                        # them, so a suspend that released its sandbox's network while the egress point
                        # was down (killed, crashed) left it attached to a network that is gone, and the
                        # engine will never start it again. Replace it on the networks still there; never
                        # let this reach the caller as a lost sandbox (a resume would expire it).
                        if self._removing(found["Id"]):
                            self._await_gone(found["Id"])
                            continue
                        created = self._replace(found, want)
                        if created is None:
                            continue
                        return created
                    except ProviderError:
                        if not self._removing(found["Id"]):
                            raise
                        self._await_gone(found["Id"])  # removed under us: make a new one
                        continue
                    calls.await_log(found["Id"], READY, "the egress container")
                elif not (probe := self.probe(found)).ok:
                    self._restart(found["Id"], probe.detail)
                return str(found["Id"])
        raise ProviderError(f"the egress container {self.name} keeps changing under us; retry")

    def attach(self, network: str) -> None:
        """The egress container (started if need be) on ``network``, under the alias sandboxes use."""
        for attempt in range(2):
            egress = self.ensure()
            try:
                self._connect(egress, network, alias=EGRESS_ALIAS)
                return
            except docker.errors.NotFound as exc:
                if attempt:  # the reconciler removed it between the two calls: once more
                    raise ProviderError(
                        f"the egress container went away while attaching {network}; retry"
                    ) from exc

    def inspect(self) -> dict[str, Any] | None:
        """The engine's view of the container named like this deployment's egress point, if any."""
        return self._calls.inspect_container(self.name)

    def probe(self, found: Mapping[str, Any] | None = None) -> EgressProbe:
        """Whether the proxy answers a request through its real path (egress/probe.py): to its bridge
        address, or from inside the container where this host cannot reach that."""
        found = found if found is not None else self.inspect()
        if found is None or not (found.get("State") or {}).get("Running"):
            return EgressProbe(False, f"{self.name} is not running")
        networks = (found.get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(OUTSIDE_NETWORK) or {}).get("IPAddress")
        failed = egress_probe.probe(address, PROXY_PORT, _PROBE_TIMEOUT_S) if address else "no address"
        if failed is not None and failed.startswith(("cannot reach", "no address")):
            failed = self._probe_inside(str(found["Id"]))
        return EgressProbe(failed is None, failed or f"the proxy answers a request on port {PROXY_PORT}")

    def state_owner(self) -> str:
        """The egress program runs as the owner of the state dir (root only when root owns it, and then
        without any capability)."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        info = os.stat(self.state_dir)
        return f"{info.st_uid}:{info.st_gid}"

    # ----------------------------------------------------------------------------------- internals

    def _probe_inside(self, container: str) -> str | None:
        api = self._calls.api
        try:
            with self._calls.errors("probe the egress proxy"):
                run = api.exec_create(container, ["python3", "-m", "egress.probe", str(PROXY_PORT)])
                output = api.exec_start(run["Id"]).decode(errors="replace").strip()
                code = api.exec_inspect(run["Id"]).get("ExitCode")
        except ProviderError as exc:
            return str(exc)
        return None if code == 0 else (output or f"the probe exited {code}")

    def _restart(self, container: str, why: str) -> None:
        """Restart an egress container whose proxy does not answer; networks stay attached and policies
        and tokens are files in the state dir, so live sandboxes keep their way out."""
        with self._calls.errors("restart the egress container"):
            self._calls.api.restart(container, timeout=2)
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            probe = self.probe()
            if probe.ok:
                return
            time.sleep(0.1)
        raise ProviderError(
            f"the egress proxy did not answer ({why}); restarted, it still does not: {probe.detail}"
        )

    def _create(self, config: str) -> str | None:
        calls = self._calls
        api = calls.api
        user = self.state_owner()
        labels = role_labels(ROLE_EGRESS, self.deployment) | {LABEL_CONFIG: config}
        with calls.errors("create the egress container"):
            try:
                container = api.create_container(
                    self.image,
                    name=self.name,
                    entrypoint=["python3", "-m", "egress.main", "proxy", "--state", "/state"],
                    command=[],
                    user=user,
                    labels=labels,
                    environment=PYTHON_ENV,
                    host_config=api.create_host_config(
                        **hardened(256),
                        mounts=[
                            self.package_mount(),
                            Mount(target="/state", source=self.state_dir, type="bind"),
                        ],
                        network_mode=OUTSIDE_NETWORK,
                        # Back after an engine restart, before any sandbox is started again.
                        restart_policy={"Name": "unless-stopped"},
                    ),
                )
            except docker.errors.ImageNotFound as exc:
                error = ProviderError(
                    f"Docker image {self.image!r} is missing: the egress point runs on the data-app image; "
                    "build it with sandboxes/data-apps/build-local-image.sh"
                )
                error.retryable = False
                raise error from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    self._await_existing(self.name)
                    return None
                raise
            api.start(container["Id"])
        calls.await_log(container["Id"], READY, "the egress container")
        return str(container["Id"])

    def _config(self) -> str:
        """A digest of everything the running egress container was made from: a change replaces it."""
        digest = hashlib.sha256()
        digest.update(f"{self.image}\0{self.state_dir}\0{self.state_owner()}\0".encode())
        for name in sorted(os.listdir(self.package)):
            if name.endswith(".py"):
                digest.update(name.encode() + b"\0" + Path(self.package, name).read_bytes())
        return digest.hexdigest()[:16]

    def _replace(self, found: Mapping[str, Any], want: str) -> str | None:
        """A new egress container in place of ``found``, on the sandbox networks it was on and under the
        alias sandboxes know it by (without it their proxy settings name a host that does not resolve);
        None when another process took the name meanwhile."""
        networks = set((found.get("NetworkSettings") or {}).get("Networks") or {})
        self._calls.remove_container(found["Id"])
        created = self._create(want)
        if created is None:
            return None
        for net in sorted(networks - {OUTSIDE_NETWORK}):
            with suppress(docker.errors.NotFound):
                self._connect(created, net, alias=EGRESS_ALIAS)
        return created

    def _connect(self, container: str, network: str, alias: str | None = None) -> None:
        try:
            self._calls.api.connect_container_to_network(
                container, network, aliases=[alias] if alias else None
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                raise
            if "already exists" not in str(exc):
                raise self._calls.mapped(exc, f"connect {container[:12]} to {network}") from exc

    def _removing(self, container: str) -> bool:
        found = self._calls.inspect_container(container)
        return found is None or found["State"].get("Status") == "removing"

    def _await_gone(self, container: str) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while self._calls.inspect_container(container) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _await_existing(self, name: str) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while self._calls.inspect_container(name) is None and time.monotonic() < deadline:
            time.sleep(0.05)
