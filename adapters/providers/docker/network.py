"""The network of Docker sandboxes: one internal network per sandbox, one egress container per
deployment, and a port forwarder per (sandbox, port). See docs/network.md for the picture.

- A sandbox's network (``sbx-net-<id>``) is internal, and the host takes no address on its bridge
  (``inhibit_ipv4``): the only other member a sandbox finds there is the egress container, under the
  alias ``egress``. No route leads out, to the host's services or to another sandbox's network. Its
  subnet is a small one taken from ``SANDBOX_DOCKER_NETWORK_POOL``, so thousands of sandboxes do not
  use up the engine's default address pools.
- The egress container (``sandbox-lifecycle-egress-<deployment>``) runs ``adapters/egress`` with the
  data-app image's python3, the package directory mounted read-only: the proxy on 3128 enforcing each
  sandbox's allow-list, and the model-API gateway on 8081. It sits on the default bridge for its own
  way out, and is connected to every sandbox network. It is started on first need by whichever process
  needs it (creation by name is the lock), lives on when the backend restarts, and is removed by the
  reconciler once no sandbox network is left.
- The proxy tells sandboxes apart by the network a connection arrives on: each sandbox's policy file
  (``<state>/policies/<id>.json``) names its subnet, kind and rules; the engine assigns the address.
- A forwarder (``sandbox-lifecycle-fwd-<id>-<port>``) publishes one port of the sandbox on the host's
  loopback: it is on the default bridge (published ``127.0.0.1::18080``) and on the sandbox's network,
  and connects only to the sandbox's address.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import docker
import docker.errors
import requests.exceptions
from docker.types import IPAMConfig, IPAMPool, Mount

from sandbox_lifecycle.adapters import egress as egress_package
from sandbox_lifecycle.adapters.composition.environ import egress_env_name
from sandbox_lifecycle.adapters.egress import policy as egress_policy
from sandbox_lifecycle.adapters.egress import probe as egress_probe
from sandbox_lifecycle.adapters.egress import tokens as egress_tokens
from sandbox_lifecycle.adapters.egress.forward import LISTEN_PORT as FORWARD_PORT
from sandbox_lifecycle.adapters.egress.main import GATEWAY_PORT, PROXY_PORT, READY
from sandbox_lifecycle.adapters.providers.docker.bridge import (
    DEFAULT_BRIDGE,
    BridgeAddressUnknown,
    bridge_host_address,
)
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost, ProviderRefused

# The provider's own labels (adapters/providers/docker/provider.py), repeated: that module imports this one.
LABEL_ID = "sandbox-lifecycle.id"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
# What a network or helper container is for; helpers carry no "managed" label, so they are never
# listed as sandbox instances.
LABEL_ROLE = "sandbox-lifecycle.role"
LABEL_CONFIG = "sandbox-lifecycle.egress-config"
LABEL_TARGET = "sandbox-lifecycle.target"
ROLE_EGRESS, ROLE_NETWORK, ROLE_FORWARDER = "egress", "network", "forwarder"

DEFAULT_STATE_ROOT = "/var/lib/sandbox-lifecycle/egress"
EGRESS_ALIAS = "egress"
OUTSIDE_NETWORK = (
    DEFAULT_BRIDGE  # the engine's default bridge: the egress container's and forwarders' way out
)
SUBNET_PREFIX = 28  # 14 addresses: the sandbox, the egress container and a dozen forwarders
_PACKAGE_MOUNT = "/opt/sandbox-lifecycle"
_READY_WAIT_S = 15.0
_PROBE_TIMEOUT_S = 2.0  # the proxy answers the health probe in about a millisecond when well
_SUBNET_ATTEMPTS = 20
_HELPER_USER = "1000:1000"


def sandbox_environment(token: str) -> dict[str, str]:
    """What points git, curl, pip, npm and the agent CLI at the egress point (interfaces of issue I)."""
    proxy = f"http://{EGRESS_ALIAS}:{PROXY_PORT}"
    no_proxy = f"{EGRESS_ALIAS},localhost,127.0.0.1"
    return {
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "http_proxy": proxy,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        "ANTHROPIC_BASE_URL": f"http://{EGRESS_ALIAS}:{GATEWAY_PORT}",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "ANTHROPIC_API_KEY": token,
    }


@dataclass(frozen=True, slots=True)
class EgressProbe:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Attachment:
    network: str
    environment: dict[str, str]


class SandboxNetworks:
    """Networks, the egress container and forwarders of one deployment on one engine."""

    def __init__(
        self,
        client: Callable[[], docker.DockerClient],
        deployment: str,
        settings: EgressSettings,
        image: str,
    ) -> None:
        self._client = client
        self.deployment = deployment
        self.settings = settings
        self.image = image
        self.state_dir = str(settings.state_dir or Path(DEFAULT_STATE_ROOT) / deployment)
        self.egress_name = f"sandbox-lifecycle-egress-{deployment}"
        self._pool = ipaddress.IPv4Network(settings.network_pool)
        self._package = str(Path(egress_package.__file__).resolve().parent)
        self._lock = threading.Lock()
        self._egress_lock = threading.Lock()

    @property
    def api(self) -> Any:
        return self._client().api

    # ------------------------------------------------------------------------------- per sandbox

    def prepare(self, sandbox_id: str, kind: str) -> Attachment:
        """The sandbox's network, its policy, the egress container on it, and the sandbox's environment:
        everything its container needs before it is created."""
        self._prepare_state()
        self.ensure_egress()  # first: a missing image or engine fails before anything is made
        with self._network_lock():
            network, subnet = self._network(sandbox_id)
        egress_policy.write_policy(
            self.state_dir,
            egress_policy.policy_document(
                sandbox_id,
                kind,
                subnet,
                self.settings.allow.get(kind, ()),
                self.settings.resolve,
                egress_env_name(kind),
            ),
        )
        self._attach_egress(network)
        return Attachment(network, sandbox_environment(self._issue_token(sandbox_id)))

    def adopt(self, sandbox_id: str, container: Mapping[str, Any]) -> None:
        """Make an existing container's way out whole again (a create that found it: a retry, or the loser
        of a concurrent create): the egress container on its network, and the token in its environment
        as the sandbox's current one — the losing create issued another, which no container holds."""
        self._attach_egress(network_name(sandbox_id))
        env = dict(e.split("=", 1) for e in (container.get("Config") or {}).get("Env") or [] if "=" in e)
        token = env.get("ANTHROPIC_API_KEY")
        if not token:
            return
        # tokens/<id> holds the sha256 of the current token (interfaces of the gateway).
        folder = os.path.join(self.state_dir, "tokens")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path = os.path.join(folder, sandbox_id)
        # A temporary file of its own (0600) per writer: threads of one process race here too.
        fd, temp = tempfile.mkstemp(dir=self.state_dir, prefix="upstream.json.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(hashlib.sha256(token.encode()).hexdigest() + "\n")
        os.replace(temp, path)

    def release(self, sandbox_id: str) -> None:
        """Remove what the sandbox had besides its container: forwarders, network, policy and token."""
        for row in self._helpers(ROLE_FORWARDER, sandbox_id):
            self._remove_container(row["Id"])
        name = network_name(sandbox_id)
        found = self._inspect_network(name)
        if found is not None and _labels(found).get(LABEL_DEPLOYMENT) == self.deployment:
            for member in found.get("Containers") or {}:
                with suppress(docker.errors.NotFound, docker.errors.APIError):
                    self.api.disconnect_container_from_network(member, found["Id"], force=True)
            with suppress(docker.errors.NotFound), self._errors(f"remove network {name}"):
                self.api.remove_network(found["Id"])
        egress_policy.remove_policy(self.state_dir, sandbox_id)
        self._revoke_token(sandbox_id)

    def url(self, sandbox_id: str, ref: str, port: int) -> str:
        """``http://127.0.0.1:<p>`` on which the host reaches ``port`` in the sandbox (a forwarder)."""
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port!r}")
        name = f"sandbox-lifecycle-fwd-{sandbox_id}-{port}"
        found = self._inspect_container(name)
        if found is not None:
            published = _published(found)
            if _labels(found).get(LABEL_TARGET) == ref and found["State"]["Running"] and published:
                return f"http://127.0.0.1:{published}"
            self._remove_container(found["Id"])  # a forwarder to an earlier container of the sandbox
        target = self._address_of(ref, sandbox_id)
        labels = self._labels(ROLE_FORWARDER, sandbox_id) | {LABEL_TARGET: ref}
        with self._errors(f"start the port forwarder of sandbox {sandbox_id}"):
            try:
                container = self.api.create_container(
                    self.image,
                    name=name,
                    entrypoint=["python3", "-m", "egress.main", "forward", target, str(port)],
                    command=[],
                    user=_HELPER_USER,
                    labels=labels,
                    environment=_PYTHON_ENV,
                    ports=[FORWARD_PORT],
                    host_config=self.api.create_host_config(
                        **_hardened(64),
                        mounts=[self._package_mount()],
                        network_mode=OUTSIDE_NETWORK,
                        port_bindings={FORWARD_PORT: ("127.0.0.1", None)},
                    ),
                )
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                return self._await_forwarder(name)  # another process is starting the same forwarder
            self.api.connect_container_to_network(container["Id"], network_name(sandbox_id))
            self.api.start(container["Id"])
        self._await_log(container["Id"], "forwarding", f"the port forwarder of sandbox {sandbox_id}")
        return self._await_forwarder(name)

    def model_call_at(self, sandbox_id: str) -> datetime | None:
        """When the gateway last forwarded a model call of this sandbox (the mtime it touches)."""
        try:
            stamp = os.stat(os.path.join(self.state_dir, "activity", sandbox_id)).st_mtime
        except OSError:
            return None
        return datetime.fromtimestamp(stamp, UTC)

    # ------------------------------------------------------------------------------- reconciling

    def remove_unused(self, older_than: datetime, live: set[str]) -> list[str]:
        """Networks, forwarders and policies of sandboxes without a container (networks only once older
        than ``older_than``: a create in flight makes its network first), then the egress container once
        no sandbox network is left. ``live``: the sandbox ids that have a container."""
        removed: list[str] = []
        with self._errors("list sandbox networks"):
            networks = self.api.networks(filters={"label": self._filters(ROLE_NETWORK)})
        kept = set()
        for net in networks:
            sid = _labels(net).get(LABEL_ID, "")
            if sid in live or _created(net) > older_than:
                kept.add(sid)
                continue
            self.release(sid)
            removed.append(f"removed network {net.get('Name')} of sandbox {sid} (it has no container)")
        for row in self._helpers(ROLE_FORWARDER):
            sid = _labels(row).get(LABEL_ID, "")
            if sid not in live:
                self._remove_container(row["Id"])
                removed.append(
                    f"removed port forwarder {row['Names'][0].lstrip('/')} (sandbox {sid} is gone)"
                )
        folder = os.path.join(self.state_dir, egress_policy.POLICY_DIR)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            sid = name.removesuffix(".json")
            if name.endswith(".json") and sid not in kept and sid not in live:
                egress_policy.remove_policy(self.state_dir, sid)
        if not kept and not live and self._remove_idle_egress():
            removed.append(f"removed egress container {self.egress_name} (no sandbox needs it)")
        return removed

    def _remove_idle_egress(self) -> bool:
        # Under the network lock: a create makes its network under it before it attaches the egress
        # container, so either this sees that network and keeps the container, or the create finds the
        # container gone and starts a new one. Never a create holding a container being removed.
        if self._inspect_container(self.egress_name) is None:
            return False  # nothing to remove (and maybe no state dir to lock in yet)
        with self._network_lock():
            found = self._inspect_container(self.egress_name)
            if found is None or _labels(found).get(LABEL_DEPLOYMENT) != self.deployment:
                return False
            attached = set((found.get("NetworkSettings") or {}).get("Networks") or {}) - {OUTSIDE_NETWORK}
            with self._errors("list sandbox networks"):
                if attached or self.api.networks(filters={"label": self._filters(ROLE_NETWORK)}):
                    return False
            self._remove_container(found["Id"])
            return True

    # ------------------------------------------------------------------------------------ egress

    def ensure_egress(self) -> str:
        """The running egress container of this deployment (its id), started if need be."""
        want = self._egress_config()
        with self._egress_lock:
            for _attempt in range(3):
                found = self._inspect_container(self.egress_name)
                if found is None:
                    created = self._create_egress(want)
                    if created is not None:
                        return created
                    continue  # lost the name to another process: take theirs
                labels = _labels(found)
                if labels.get(LABEL_ROLE) != ROLE_EGRESS or labels.get(LABEL_DEPLOYMENT) != self.deployment:
                    raise ProviderRefused(
                        f"a container named {self.egress_name} exists that is not this deployment's egress "
                        "point; remove or rename it"
                    )
                if labels.get(LABEL_CONFIG) != want:
                    # Another version of the egress program or settings: replace it, keeping its networks.
                    created = self._replace_egress(found, want)
                    if created is None:
                        continue
                    return created
                if found["State"].get("Status") == "removing":
                    self._await_gone(found["Id"])  # a sweep found it idle a moment ago: make a new one
                    continue
                if not found["State"]["Running"]:
                    try:
                        with self._errors("start the egress container"):
                            self.api.start(found["Id"])
                    except ProviderLost:
                        # A stopped container keeps its endpoints, but a network inspect does not list
                        # them, so a suspend that released its sandbox's network while the egress point
                        # was down (killed, crashed) left it attached to a network that is gone, and the
                        # engine will never start it again. Replace it on the networks still there; never
                        # let this reach the caller as a lost sandbox (a resume would expire it).
                        if self._removing(found["Id"]):
                            self._await_gone(found["Id"])
                            continue
                        created = self._replace_egress(found, want)
                        if created is None:
                            continue
                        return created
                    except ProviderError:
                        if not self._removing(found["Id"]):
                            raise
                        self._await_gone(found["Id"])  # removed under us: make a new one
                        continue
                    self._await_log(found["Id"], READY, "the egress container")
                elif not (probe := self.probe_egress(found)).ok:
                    self._restart_egress(found["Id"], probe.detail)
                return str(found["Id"])
        raise ProviderError(f"the egress container {self.egress_name} keeps changing under us; retry")

    def probe_egress(self, found: Mapping[str, Any] | None = None) -> EgressProbe:
        """Whether the proxy answers a request through its real path (egress/probe.py): to its bridge
        address, or from inside the container where this host cannot reach that."""
        found = found if found is not None else self._inspect_container(self.egress_name)
        if found is None or not (found.get("State") or {}).get("Running"):
            return EgressProbe(False, f"{self.egress_name} is not running")
        networks = (found.get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(OUTSIDE_NETWORK) or {}).get("IPAddress")
        failed = egress_probe.probe(address, PROXY_PORT, _PROBE_TIMEOUT_S) if address else "no address"
        if failed is not None and failed.startswith(("cannot reach", "no address")):
            failed = self._probe_inside(str(found["Id"]))
        return EgressProbe(failed is None, failed or f"the proxy answers a request on port {PROXY_PORT}")

    def _probe_inside(self, container: str) -> str | None:
        try:
            with self._errors("probe the egress proxy"):
                run = self.api.exec_create(container, ["python3", "-m", "egress.probe", str(PROXY_PORT)])
                output = self.api.exec_start(run["Id"]).decode(errors="replace").strip()
                code = self.api.exec_inspect(run["Id"]).get("ExitCode")
        except ProviderError as exc:
            return str(exc)
        return None if code == 0 else (output or f"the probe exited {code}")

    def _restart_egress(self, container: str, why: str) -> None:
        """Restart an egress container whose proxy does not answer; networks stay attached and policies
        and tokens are files in the state dir, so live sandboxes keep their way out."""
        with self._errors("restart the egress container"):
            self.api.restart(container, timeout=2)
        deadline = time.monotonic() + _READY_WAIT_S
        while time.monotonic() < deadline:
            probe = self.probe_egress()
            if probe.ok:
                return
            time.sleep(0.1)
        raise ProviderError(
            f"the egress proxy did not answer ({why}); restarted, it still does not: {probe.detail}"
        )

    def inspect_egress(self) -> dict[str, Any] | None:
        """The engine's view of the container named like this deployment's egress point, if any."""
        return self._inspect_container(self.egress_name)

    def _create_egress(self, config: str) -> str | None:
        user = self._state_owner()
        labels = self._labels(ROLE_EGRESS) | {LABEL_CONFIG: config}
        with self._errors("create the egress container"):
            try:
                container = self.api.create_container(
                    self.image,
                    name=self.egress_name,
                    entrypoint=["python3", "-m", "egress.main", "proxy", "--state", "/state"],
                    command=[],
                    user=user,
                    labels=labels,
                    environment=_PYTHON_ENV,
                    host_config=self.api.create_host_config(
                        **_hardened(256),
                        mounts=[
                            self._package_mount(),
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
                    self._await_existing(self.egress_name)
                    return None
                raise
            self.api.start(container["Id"])
        self._await_log(container["Id"], READY, "the egress container")
        return str(container["Id"])

    def _egress_config(self) -> str:
        """A digest of everything the running egress container was made from: a change replaces it."""
        digest = hashlib.sha256()
        digest.update(f"{self.image}\0{self.state_dir}\0{self._state_owner()}\0".encode())
        for name in sorted(os.listdir(self._package)):
            if name.endswith(".py"):
                digest.update(name.encode() + b"\0" + Path(self._package, name).read_bytes())
        return digest.hexdigest()[:16]

    def _attach_egress(self, network: str) -> None:
        for attempt in range(2):
            egress = self.ensure_egress()
            try:
                self._connect(egress, network, alias=EGRESS_ALIAS)
                return
            except docker.errors.NotFound as exc:
                if attempt:  # the reconciler removed it between the two calls: once more
                    raise ProviderError(
                        f"the egress container went away while attaching {network}; retry"
                    ) from exc

    def _replace_egress(self, found: Mapping[str, Any], want: str) -> str | None:
        """A new egress container in place of ``found``, on the sandbox networks it was on and under the
        alias sandboxes know it by (without it their proxy settings name a host that does not resolve);
        None when another process took the name meanwhile."""
        networks = set((found.get("NetworkSettings") or {}).get("Networks") or {})
        self._remove_container(found["Id"])
        created = self._create_egress(want)
        if created is None:
            return None
        for net in sorted(networks - {OUTSIDE_NETWORK}):
            with suppress(docker.errors.NotFound):
                self._connect(created, net, alias=EGRESS_ALIAS)
        return created

    def _connect(self, container: str, network: str, alias: str | None = None) -> None:
        try:
            self.api.connect_container_to_network(container, network, aliases=[alias] if alias else None)
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                raise
            if "already exists" not in str(exc):
                raise self._mapped(exc, f"connect {container[:12]} to {network}") from exc

    # ----------------------------------------------------------------------------------- internals

    def _prepare_state(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        upstream = {"url": self._upstream_url(), "api_key": self.settings.api_key}
        path = os.path.join(self.state_dir, "upstream.json")
        with suppress(OSError, ValueError), open(path, encoding="utf-8") as file:
            if json.load(file) == upstream:
                return
        # A temporary file of its own (0600) per writer: threads of one process race here too.
        fd, temp = tempfile.mkstemp(dir=self.state_dir, prefix="upstream.json.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(upstream, file)
        os.replace(temp, path)

    def _upstream_url(self) -> str:
        """ANTHROPIC_BASE_URL as the egress container reaches it. Its loopback is its own, so a loopback
        URL (a model server on this host) becomes the host's address on the default bridge; that server
        must listen there (or on 0.0.0.0), not on 127.0.0.1 only."""
        url = urlsplit(self.settings.upstream_url)
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            return self.settings.upstream_url
        with self._errors("inspect the default bridge"):
            bridge = self.api.inspect_network(OUTSIDE_NETWORK)
        try:
            host = bridge_host_address(bridge)
        except BridgeAddressUnknown as exc:
            raise ProviderRefused(f"ANTHROPIC_BASE_URL is a loopback URL, but {exc}") from exc
        netloc = f"{host}:{url.port}" if url.port else str(host)
        return urlunsplit(url._replace(netloc=netloc))

    def _state_owner(self) -> str:
        """The egress program runs as the owner of the state dir (root only when root owns it, and then
        without any capability)."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        info = os.stat(self.state_dir)
        return f"{info.st_uid}:{info.st_gid}"

    @contextmanager
    def _network_lock(self) -> Iterator[None]:
        """Held while finding or making a network. The engine does not make network names unique (two
        concurrent creates make two networks of one name) and a subnet is only taken once created; every
        process of the deployment runs on the engine's host (it bind-mounts this directory), so a lock
        file there orders them."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        with self._lock, open(os.path.join(self.state_dir, ".network.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _network(self, sandbox_id: str) -> tuple[str, str]:
        """The sandbox's network and subnet, made on a free subnet of the pool if it does not exist."""
        name = network_name(sandbox_id)
        for _attempt in range(_SUBNET_ATTEMPTS):
            found = self._inspect_network(name)
            if found is not None:
                labels = _labels(found)
                if labels.get(LABEL_DEPLOYMENT) != self.deployment or labels.get(LABEL_ID) != sandbox_id:
                    raise ProviderRefused(
                        f"a network named {name} exists that is not this sandbox's; remove it"
                    )
                return name, str(found["IPAM"]["Config"][0]["Subnet"])
            subnet = self._free_subnet()
            try:
                self.api.create_network(
                    name,
                    driver="bridge",
                    internal=True,
                    # The host takes no address on the bridge: nothing of the host is reachable from it.
                    options={"com.docker.network.bridge.inhibit_ipv4": "true"},
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]),
                    labels=self._labels(ROLE_NETWORK, sandbox_id),
                    check_duplicate=True,
                )
                return name, subnet
            except docker.errors.APIError as exc:
                text = str(exc).lower()
                if "overlap" in text or exc.status_code == 409:
                    continue  # another process took that subnet (or this name) just now
                raise self._mapped(exc, f"create the network of sandbox {sandbox_id}") from exc
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise self._mapped(exc, f"create the network of sandbox {sandbox_id}") from exc
        raise ProviderError(f"no free subnet for sandbox {sandbox_id} after {_SUBNET_ATTEMPTS} tries; retry")

    def _free_subnet(self) -> str:
        with self._errors("list networks"):
            used = [
                ipaddress.IPv4Network(config["Subnet"], strict=False)
                for net in self.api.networks()
                for config in ((net.get("IPAM") or {}).get("Config") or [])
                if config.get("Subnet") and ":" not in config["Subnet"]
            ]
        taken = [u for u in used if u.overlaps(self._pool)]
        candidates = list(self._pool.subnets(new_prefix=SUBNET_PREFIX))
        start = random.randrange(len(candidates))  # processes racing for a subnet rarely pick the same
        for subnet in candidates[start:] + candidates[:start]:
            if not any(subnet.overlaps(u) for u in taken):
                return str(subnet)
        raise ProviderError(
            f"every /{SUBNET_PREFIX} of SANDBOX_DOCKER_NETWORK_POOL={self._pool} is in use; "
            "give it a larger network"
        )

    def _address_of(self, ref: str, sandbox_id: str) -> str:
        found = self._inspect_container(ref)
        networks = ((found or {}).get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(network_name(sandbox_id)) or {}).get("IPAddress")
        if not address:
            raise ProviderLost(f"sandbox container {ref[:12]} is not running on its network")
        return str(address)

    def _await_forwarder(self, name: str) -> str:
        deadline = time.monotonic() + _READY_WAIT_S
        while time.monotonic() < deadline:
            found = self._inspect_container(name)
            published = _published(found) if found else None
            if published:
                return f"http://127.0.0.1:{published}"
            time.sleep(0.05)
        raise ProviderError(f"the port forwarder {name} did not come up; retry")

    def _removing(self, container: str) -> bool:
        found = self._inspect_container(container)
        return found is None or found["State"].get("Status") == "removing"

    def _await_gone(self, container: str) -> None:
        deadline = time.monotonic() + _READY_WAIT_S
        while self._inspect_container(container) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _await_existing(self, name: str) -> None:
        deadline = time.monotonic() + _READY_WAIT_S
        while self._inspect_container(name) is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _await_log(self, container: str, line: str, what: str) -> None:
        deadline = time.monotonic() + _READY_WAIT_S
        while time.monotonic() < deadline:
            with self._errors(f"read the log of {what}"):
                logs = self.api.logs(container, stdout=True, stderr=True, tail=50)
                state = self.api.inspect_container(container)["State"]
            if line.encode() in logs:
                return
            if not state["Running"] and state["Status"] != "created":
                raise ProviderError(f"{what} exited: {logs.decode(errors='replace')[-500:].strip()}")
            time.sleep(0.05)
        raise ProviderError(f"{what} did not become ready within {_READY_WAIT_S:g}s")

    def _issue_token(self, sandbox_id: str) -> str:
        return egress_tokens.issue_token(self.state_dir, sandbox_id)

    def _revoke_token(self, sandbox_id: str) -> None:
        egress_tokens.revoke_token(self.state_dir, sandbox_id)

    def _package_mount(self) -> Mount:
        return Mount(target=f"{_PACKAGE_MOUNT}/egress", source=self._package, type="bind", read_only=True)

    def _labels(self, role: str, sandbox_id: str | None = None) -> dict[str, str]:
        labels = {LABEL_ROLE: role, LABEL_DEPLOYMENT: self.deployment}
        if sandbox_id is not None:
            labels[LABEL_ID] = sandbox_id
        return labels

    def _filters(self, role: str, sandbox_id: str | None = None) -> list[str]:
        return [f"{k}={v}" for k, v in self._labels(role, sandbox_id).items()]

    def _helpers(self, role: str, sandbox_id: str | None = None) -> list[dict[str, Any]]:
        with self._errors("list helper containers"):
            rows: list[dict[str, Any]] = self.api.containers(
                all=True, filters={"label": self._filters(role, sandbox_id)}
            )
        return rows

    def _inspect_container(self, name: str) -> dict[str, Any] | None:
        try:
            with self._errors(f"inspect container {name}"):
                found: dict[str, Any] = self.api.inspect_container(name)
                return found
        except ProviderLost:
            return None

    def _inspect_network(self, name: str) -> dict[str, Any] | None:
        try:
            with self._errors(f"inspect network {name}"):
                found: dict[str, Any] = self.api.inspect_network(name)
                return found
        except ProviderLost:
            return None

    def _remove_container(self, ref: str) -> None:
        with suppress(ProviderLost), self._errors(f"remove container {ref[:12]}"):
            self.api.remove_container(ref, v=True, force=True)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._mapped(exc, action) from exc

    @staticmethod
    def _mapped(exc: BaseException, action: str) -> ProviderError:
        if isinstance(exc, docker.errors.NotFound):
            return ProviderLost(f"{action}: not found")
        if isinstance(exc, docker.errors.APIError):
            return ProviderError(f"{action} failed: {exc.explanation or exc}")
        return ProviderError(f"{action}: the Docker engine is unreachable ({exc})")


def network_name(sandbox_id: str) -> str:
    return f"sbx-net-{sandbox_id}"


_PYTHON_ENV = {"PYTHONPATH": _PACKAGE_MOUNT, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def _hardened(memory_mb: int) -> dict[str, Any]:
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


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = obj.get("Labels")
    if labels is None:
        labels = (obj.get("Config") or {}).get("Labels")
    return dict(labels or {})


def _published(container: Mapping[str, Any]) -> str | None:
    ports = ((container.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{FORWARD_PORT}/tcp") or []
    for binding in ports:
        if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
            return str(binding["HostPort"])
    return None


_CREATED = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?")


def _created(network: Mapping[str, Any]) -> datetime:
    """The engine's creation time ("2026-12-02T01:20:00.123456789Z"), to the second."""
    found = _CREATED.match(str(network.get("Created")))
    if found is None:
        return datetime.min.replace(tzinfo=UTC)
    zone = found.group(2) or "Z"
    return datetime.fromisoformat(found.group(1) + ("+00:00" if zone == "Z" else zone))
