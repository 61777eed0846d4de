"""The network of Docker sandboxes: one internal network per sandbox, one egress container per
deployment, and a port forwarder per (sandbox, port). See docs/network.md for the picture.

- A sandbox's network (``sbx-net-<id>``) is internal, and the host takes no address on its bridge
  (``inhibit_ipv4``): the only other member a sandbox finds there is the egress container, under the
  alias ``egress``. No route leads out, to the host's services or to another sandbox's network. Its
  subnet is a small one taken from ``SANDBOX_DOCKER_NETWORK_POOL``, so thousands of sandboxes do not
  use up the engine's default address pools.
- The egress container (``sandbox-lifecycle-egress-<deployment>``, egress_point.py) runs the proxy
  enforcing each sandbox's allow-list and the model-API gateway. It is connected to every sandbox
  network, and removed by the reconciler here once no sandbox network is left.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import docker
import docker.errors
import requests.exceptions
from docker.types import IPAMConfig, IPAMPool

from sandbox_lifecycle.adapters import egress as egress_package
from sandbox_lifecycle.adapters.composition.environ import egress_env_name
from sandbox_lifecycle.adapters.egress import policy as egress_policy
from sandbox_lifecycle.adapters.egress import tokens as egress_tokens
from sandbox_lifecycle.adapters.egress.bookkeeping import start_run
from sandbox_lifecycle.adapters.egress.forward import LISTEN_PORT as FORWARD_PORT
from sandbox_lifecycle.adapters.egress.main import GATEWAY_PORT, PROXY_PORT
from sandbox_lifecycle.adapters.gateway.credentials import prepare_credentials
from sandbox_lifecycle.adapters.providers.docker.bridge import BridgeAddressUnknown, bridge_host_address
from sandbox_lifecycle.adapters.providers.docker.containers import LABEL_DEPLOYMENT, LABEL_ID, labels_of
from sandbox_lifecycle.adapters.providers.docker.egress_point import (
    EGRESS_ALIAS,
    OUTSIDE_NETWORK,
    EgressPoint,
    EgressProbe,
)
from sandbox_lifecycle.adapters.providers.docker.helpers import (
    HELPER_USER,
    LABEL_ROLE,
    LABEL_TARGET,
    PYTHON_ENV,
    READY_WAIT_S,
    ROLE_EGRESS,
    ROLE_FORWARDER,
    ROLE_NETWORK,
    HelperCalls,
    hardened,
    role_labels,
)
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost, ProviderRefused

# Where the doctor and the tests have always imported them from.
__all__ = [
    "EGRESS_ALIAS",
    "LABEL_DEPLOYMENT",
    "LABEL_ID",
    "LABEL_ROLE",
    "OUTSIDE_NETWORK",
    "ROLE_EGRESS",
    "Attachment",
    "EgressProbe",
    "SandboxNetworks",
    "network_name",
    "sandbox_environment",
]

DEFAULT_STATE_ROOT = "/var/lib/sandbox-lifecycle/egress"
SUBNET_PREFIX = 28  # 14 addresses: the sandbox, the egress container and a dozen forwarders
_SUBNET_ATTEMPTS = 20


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
        self._calls = HelperCalls(client)
        self.deployment = deployment
        self.settings = settings
        self.image = image
        self.state_dir = str(settings.state_dir or Path(DEFAULT_STATE_ROOT) / deployment)
        self._pool = ipaddress.IPv4Network(settings.network_pool)
        package = str(Path(egress_package.__file__).resolve().parent)
        self.egress = EgressPoint(self._calls, deployment, image, self.state_dir, package)
        self.egress_name = self.egress.name
        self._lock = threading.Lock()

    @property
    def api(self) -> Any:
        return self._calls.api

    def ensure_egress(self) -> str:
        """The running egress container of this deployment (its id), started if need be."""
        return self.egress.ensure()

    def probe_egress(self, found: Mapping[str, Any] | None = None) -> EgressProbe:
        """Whether the egress proxy answers (see EgressPoint.probe)."""
        return self.egress.probe(found)

    def inspect_egress(self) -> dict[str, Any] | None:
        """The engine's view of the container named like this deployment's egress point, if any."""
        return self.egress.inspect()

    # ------------------------------------------------------------------------------- per sandbox

    def prepare(self, sandbox_id: str, kind: str, allow: Sequence[str] | None = None) -> Attachment:
        """The sandbox's network, its policy (``allow``; None: the kind's allow-list), the egress container
        on it, and the sandbox's environment: everything its container needs before it is created."""
        self._prepare_state()
        self.egress.ensure()  # first: a missing image or engine fails before anything is made
        with self._network_lock():
            network, subnet = self._network(sandbox_id)
        self._write_policy(sandbox_id, kind, subnet, allow)
        self.egress.attach(network)
        # A container starts a run: its usage is what the egress point counts from here (bookkeeping.py).
        start_run(Path(self.state_dir), sandbox_id)
        return Attachment(network, sandbox_environment(self._issue_token(sandbox_id)))

    def set_policy(self, sandbox_id: str, kind: str, allow: Sequence[str] | None) -> None:
        """Rewrite the policy of the sandbox's network: ``allow`` (None: the kind's allow-list). The
        proxy reads it for the next connection and cuts open ones it no longer allows (egress/proxy.py)."""
        found = self._calls.inspect_network(network_name(sandbox_id))
        if found is None or labels_of(found).get(LABEL_ID) != sandbox_id:
            raise ProviderLost(f"sandbox {sandbox_id} has no network to set the egress of")
        self._write_policy(sandbox_id, kind, str(found["IPAM"]["Config"][0]["Subnet"]), allow)

    def _write_policy(self, sandbox_id: str, kind: str, subnet: str, allow: Sequence[str] | None) -> None:
        rules = self.settings.allow.get(kind, ()) if allow is None else allow
        # What a refusal tells the sandbox to change: the kind's variable, or the list set on it.
        variable = egress_env_name(kind) if allow is None else "the allow-list set on this sandbox"
        egress_policy.write_policy(
            self.state_dir,
            egress_policy.policy_document(sandbox_id, kind, subnet, rules, self.settings.resolve, variable),
        )

    def adopt(self, sandbox_id: str, container: Mapping[str, Any]) -> None:
        """Make an existing container's way out whole again (a create that found it: a retry, or the loser
        of a concurrent create): the egress container on its network, and the token in its environment
        as the sandbox's current one — the losing create issued another, which no container holds."""
        self.egress.attach(network_name(sandbox_id))
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
            self._calls.remove_container(row["Id"])
        name = network_name(sandbox_id)
        found = self._calls.inspect_network(name)
        if found is not None and labels_of(found).get(LABEL_DEPLOYMENT) == self.deployment:
            for member in found.get("Containers") or {}:
                with suppress(docker.errors.NotFound, docker.errors.APIError):
                    self.api.disconnect_container_from_network(member, found["Id"], force=True)
            with suppress(docker.errors.NotFound), self._calls.errors(f"remove network {name}"):
                self.api.remove_network(found["Id"])
        egress_policy.remove_policy(self.state_dir, sandbox_id)
        self._revoke_token(sandbox_id)

    def url(self, sandbox_id: str, ref: str, port: int) -> str:
        """``http://127.0.0.1:<p>`` on which the host reaches ``port`` in the sandbox (a forwarder)."""
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port!r}")
        name = f"sandbox-lifecycle-fwd-{sandbox_id}-{port}"
        found = self._calls.inspect_container(name)
        if found is not None:
            published = _published(found)
            if labels_of(found).get(LABEL_TARGET) == ref and found["State"]["Running"] and published:
                return f"http://127.0.0.1:{published}"
            self._calls.remove_container(found["Id"])  # a forwarder to an earlier container of the sandbox
        target = self._address_of(ref, sandbox_id)
        labels = role_labels(ROLE_FORWARDER, self.deployment, sandbox_id) | {LABEL_TARGET: ref}
        with self._calls.errors(f"start the port forwarder of sandbox {sandbox_id}"):
            try:
                container = self.api.create_container(
                    self.image,
                    name=name,
                    entrypoint=["python3", "-m", "egress.main", "forward", target, str(port)],
                    command=[],
                    user=HELPER_USER,
                    labels=labels,
                    environment=PYTHON_ENV,
                    ports=[FORWARD_PORT],
                    host_config=self.api.create_host_config(
                        **hardened(64),
                        mounts=[self.egress.package_mount()],
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
        self._calls.await_log(container["Id"], "forwarding", f"the port forwarder of sandbox {sandbox_id}")
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
        with self._calls.errors("list sandbox networks"):
            networks = self.api.networks(filters={"label": self._filters(ROLE_NETWORK)})
        kept = set()
        for net in networks:
            sid = labels_of(net).get(LABEL_ID, "")
            if sid in live or _created(net) > older_than:
                kept.add(sid)
                continue
            self.release(sid)
            removed.append(f"removed network {net.get('Name')} of sandbox {sid} (it has no container)")
        for row in self._helpers(ROLE_FORWARDER):
            sid = labels_of(row).get(LABEL_ID, "")
            if sid not in live:
                self._calls.remove_container(row["Id"])
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
        if self._calls.inspect_container(self.egress_name) is None:
            return False  # nothing to remove (and maybe no state dir to lock in yet)
        with self._network_lock():
            found = self._calls.inspect_container(self.egress_name)
            if found is None or labels_of(found).get(LABEL_DEPLOYMENT) != self.deployment:
                return False
            attached = set((found.get("NetworkSettings") or {}).get("Networks") or {}) - {OUTSIDE_NETWORK}
            with self._calls.errors("list sandbox networks"):
                if attached or self.api.networks(filters={"label": self._filters(ROLE_NETWORK)}):
                    return False
            self._calls.remove_container(found["Id"])
            return True

    # ----------------------------------------------------------------------------------- internals

    def _prepare_state(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        prepare_credentials(
            self.state_dir,
            {host: list(headers) for host, headers in self.settings.credentials.items()},
            self.settings.upstream_ca,
        )
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
        with self._calls.errors("inspect the default bridge"):
            bridge = self.api.inspect_network(OUTSIDE_NETWORK)
        try:
            host = bridge_host_address(bridge)
        except BridgeAddressUnknown as exc:
            raise ProviderRefused(f"ANTHROPIC_BASE_URL is a loopback URL, but {exc}") from exc
        netloc = f"{host}:{url.port}" if url.port else str(host)
        return urlunsplit(url._replace(netloc=netloc))

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
            found = self._calls.inspect_network(name)
            if found is not None:
                labels = labels_of(found)
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
                    labels=role_labels(ROLE_NETWORK, self.deployment, sandbox_id),
                    check_duplicate=True,
                )
                return name, subnet
            except docker.errors.APIError as exc:
                text = str(exc).lower()
                if "overlap" in text or exc.status_code == 409:
                    continue  # another process took that subnet (or this name) just now
                raise self._calls.mapped(exc, f"create the network of sandbox {sandbox_id}") from exc
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise self._calls.mapped(exc, f"create the network of sandbox {sandbox_id}") from exc
        raise ProviderError(f"no free subnet for sandbox {sandbox_id} after {_SUBNET_ATTEMPTS} tries; retry")

    def _free_subnet(self) -> str:
        with self._calls.errors("list networks"):
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
        found = self._calls.inspect_container(ref)
        networks = ((found or {}).get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(network_name(sandbox_id)) or {}).get("IPAddress")
        if not address:
            raise ProviderLost(f"sandbox container {ref[:12]} is not running on its network")
        return str(address)

    def _await_forwarder(self, name: str) -> str:
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            found = self._calls.inspect_container(name)
            published = _published(found) if found else None
            if published:
                return f"http://127.0.0.1:{published}"
            time.sleep(0.05)
        raise ProviderError(f"the port forwarder {name} did not come up; retry")

    def _issue_token(self, sandbox_id: str) -> str:
        return egress_tokens.issue_token(self.state_dir, sandbox_id)

    def _revoke_token(self, sandbox_id: str) -> None:
        egress_tokens.revoke_token(self.state_dir, sandbox_id)

    def _filters(self, role: str, sandbox_id: str | None = None) -> list[str]:
        return [f"{k}={v}" for k, v in role_labels(role, self.deployment, sandbox_id).items()]

    def _helpers(self, role: str, sandbox_id: str | None = None) -> list[dict[str, Any]]:
        with self._calls.errors("list helper containers"):
            rows: list[dict[str, Any]] = self.api.containers(
                all=True, filters={"label": self._filters(role, sandbox_id)}
            )
        return rows


def network_name(sandbox_id: str) -> str:
    return f"sbx-net-{sandbox_id}"


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
