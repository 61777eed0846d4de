"""Who is asking and where the gateway may connect for them: the proxy's policies, applied to the gateway.

Two decisions, both made before any upstream connection exists:

* **Which sandbox's network a connection came from.** As in the proxy, by source address against the
  subnets of ``policies/*.json``. A token of a sandbox that has a policy (a Docker sandbox) is valid
  only on a connection from that sandbox's network; a token of a sandbox without one (E2B, whose
  sandboxes reach a public gateway) only from outside every sandbox network. So a token copied out of
  sandbox B is worthless in sandbox A, and the other way round.
* **Where a git request may go.** Through :meth:`Policy.decide`, the proxy's own function: the
  sandbox's kind allow-list, no raw IP, no private, loopback, link-local or metadata address after
  resolution, and the connection made to the address that was checked. A sandbox without a policy
  (the E2B gateway) reaches only the git hosts the backend granted it a credential for, at a public
  address, or the URL the grant names (written by the backend, like the model upstream).

The model route connects only to the operator's upstream (``upstream.json``); nothing a sandbox sends
changes where it goes, only the path, which ``routes`` takes in normal form only.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .policy import POLICY_DIR, Policy, PolicyBook, Resolver, load_policy, refused_address, system_resolver
from .tokens import check_sandbox_id


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: ``address`` (checked) and ``port``; ``host`` for TLS and the Host header."""

    scheme: str
    host: str
    port: int
    address: str
    base_path: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str


class Outbound:
    """The policies of one state directory, as the gateway needs them."""

    def __init__(self, state_dir: str | os.PathLike[str], resolver: Resolver = system_resolver) -> None:
        self.state_dir = Path(state_dir)
        self.book = PolicyBook(str(state_dir))
        self.resolver = resolver

    def source_policy(self, peer: str | None) -> Policy | None:
        """The policy of the sandbox network ``peer`` is on, or None (not an IP, or no sandbox's)."""
        if peer is None:
            return None
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            return None
        return self.book.for_source(peer)

    def sandbox_policy(self, sandbox_id: str) -> Policy | None:
        path = self.state_dir / POLICY_DIR / f"{check_sandbox_id(sandbox_id)}.json"
        try:
            return load_policy(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, AssertionError):
            # Unreadable is not "absent": a Docker sandbox's token must not turn valid everywhere.
            return _UNREADABLE

    def token_fits_network(self, sandbox_id: str, peer: str | None) -> bool:
        """Whether a connection from ``peer`` may use a token of ``sandbox_id`` (module docstring)."""
        source = self.source_policy(peer)
        if source is not None:
            return source.sandbox_id == sandbox_id
        return self.sandbox_policy(sandbox_id) is None

    def git_target(self, sandbox_id: str, host: str, port: int, grant: dict[str, str]) -> Target | Refusal:
        """Where a git request of the sandbox for ``host:port`` goes, or why it may not (no connection
        is made either way). Blocking (it may resolve a name): call it off the event loop."""
        url = grant.get("url") or (f"https://{host}" if port == 443 else f"https://{host}:{port}")
        parts = urlsplit(url)
        try:
            target_port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return Refusal(503, f"the git credential for {host} names no usable URL")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return Refusal(503, f"the git credential for {host} names no usable URL")
        target_host = parts.hostname
        base = parts.path.rstrip("/")
        policy = self.sandbox_policy(sandbox_id)
        if policy is _UNREADABLE:
            return Refusal(403, "this sandbox's egress policy is unreadable; nothing is reached")
        if policy is not None:
            decision = policy.decide(target_host, target_port, self.resolver)
            if decision.address is None:
                return Refusal(
                    decision.status, f"egress refused {target_host}:{target_port}: {decision.reason}"
                )
            return Target(parts.scheme, target_host, target_port, decision.address, base)
        if not grant:
            return Refusal(
                403,
                f"egress refused {host}:{port}: the gateway relays git only to hosts the backend granted "
                "this sandbox a credential for",
            )
        if grant.get("url"):
            return Target(parts.scheme, target_host, target_port, target_host, base)
        try:
            addresses = self.resolver(target_host, target_port)
        except OSError:
            return Refusal(502, f"cannot resolve {target_host}")
        for address in addresses:
            if refused_address(address) is None:
                return Target(parts.scheme, target_host, target_port, address, base)
        return Refusal(403, f"egress refused {target_host}:{target_port}: it has no public address")


# The answer for a policy file that exists but cannot be read: refuse everything, match no network.
_UNREADABLE = Policy("", "", ipaddress.ip_network("0.0.0.0/32"), (), {}, "")
