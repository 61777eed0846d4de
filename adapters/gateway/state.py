"""The backend's side of the model-API gateway: what providers call, and what the gateway reads.

The gateway (``adapters.egress.gateway``) and the backend share one state directory per deployment
(``SANDBOX_EGRESS_STATE_DIR``, default ``/var/lib/sandbox-lifecycle/egress/<deployment>/``, 0700):

* ``upstream.json`` (0600): the upstream URL and the real key, written here before sandboxes start;
* ``tokens/<sandbox id>``: the sha256 of the sandbox's current token; a provider calls :meth:`issue` on
  create and resume (a new token each time) and :meth:`revoke` on suspend, destroy and expiry;
* ``activity/<sandbox id>``: touched by the gateway on every model call (:meth:`model_activity`);
* ``counters/<sandbox id>.json``: requests, bytes and upstream statuses (:meth:`counters`);
* ``git/<sandbox id>.json`` (0600): git credentials granted to the sandbox per host (:meth:`grant_git`),
  which the gateway adds to the sandbox's git requests so the sandbox never holds them.

How a provider uses it: ``env = state.sandbox_env(sandbox_id, base_url)`` on create and resume gives
the ``ANTHROPIC_BASE_URL`` and token ``ANTHROPIC_API_KEY`` the sandbox runs with; ``state.revoke(id)``
when the sandbox stops being live; ``state.model_activity(id)`` merged into the provider's
``last_activity`` so a sandbox whose agent is waiting on the model is not idle.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.egress.routes import parse_git_route
from sandbox_lifecycle.adapters.egress.tokens import check_sandbox_id, issue_token, revoke_token

# The variables a sandbox's agent reads for its model (the product interface).
BASE_URL_VARIABLE = "ANTHROPIC_BASE_URL"
KEY_VARIABLE = "ANTHROPIC_API_KEY"


class GatewayState:
    """One deployment's gateway state directory."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayState:
        return cls(settings.egress_state_dir)

    def prepare(self) -> None:
        """Create the directory, private to its owner (it holds the key and the token hashes)."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        for sub in ("tokens", "activity", "counters"):
            (self.state_dir / sub).mkdir(mode=0o700, exist_ok=True)

    def write_upstream(self, url: str, api_key: str) -> None:
        """Write ``upstream.json`` (0600, atomically): where the gateway forwards, and with which key."""
        if not api_key:
            raise ValueError("the gateway needs the real ANTHROPIC_API_KEY to forward with")
        self.prepare()
        path = self.state_dir / "upstream.json"
        tmp = path.with_name(f".upstream.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": url, "api_key": api_key}, f)
        os.replace(tmp, path)

    def issue(self, sandbox_id: str, *, replace: bool = True) -> str:
        """A new token for the sandbox; with ``replace`` (create, resume) any earlier one stops working,
        without it (a process that lost the token of a running sandbox) the earlier ones stay valid."""
        return issue_token(self.state_dir, sandbox_id, replace=replace)

    def revoke(self, sandbox_id: str) -> None:
        """The sandbox's tokens stop working, and its git credentials are forgotten."""
        revoke_token(self.state_dir, sandbox_id)
        (self.state_dir / "git" / f"{sandbox_id}.json").unlink(missing_ok=True)

    def grant_git(
        self,
        sandbox_id: str,
        host: str,
        token: str,
        *,
        username: str = "x-access-token",
        url: str | None = None,
    ) -> None:
        """Let the sandbox's git reach ``host`` through the gateway with this credential (until revoke).

        ``url`` is where the gateway sends the sandbox's requests for ``host`` (default
        ``https://<host>``; a self-hosted server's base URL, or a loopback one in tests)."""
        if not token:
            raise ValueError("an empty token cannot authenticate")
        # Kept under the name the gateway reads from a request (lower case, ":port" unless 443), so a
        # grant is found exactly when git asks for that host; anything the route would refuse, refused here.
        route = parse_git_route("GET", f"/git/{host}/r.git/info/refs?service=git-upload-pack")
        if route is None or route[0] != host:
            raise ValueError(f"{host!r} is not a git host as the gateway routes it (lower-case name[:port])")
        self.prepare()
        path = self.state_dir / "git" / f"{check_sandbox_id(sandbox_id)}.json"
        path.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            grants: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            grants = {}
        grants[host] = {"url": url or f"https://{host}", "username": username, "token": token}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(grants, f)
        os.replace(tmp, path)

    def git_hosts(self, sandbox_id: str) -> list[str]:
        """The hosts the sandbox holds a git grant for."""
        try:
            return sorted(json.loads((self.state_dir / "git" / f"{sandbox_id}.json").read_text()))
        except (FileNotFoundError, ValueError):
            return []

    def sandbox_env(self, sandbox_id: str, gateway_url: str, *, replace: bool = True) -> dict[str, str]:
        """Issue a token and return the environment the sandbox's agent reaches its model with."""
        return {BASE_URL_VARIABLE: gateway_url, KEY_VARIABLE: self.issue(sandbox_id, replace=replace)}

    def model_activity(self, sandbox_id: str) -> datetime | None:
        """When the gateway last relayed a model call of the sandbox, or None if never."""
        return model_activity(self.state_dir, sandbox_id)

    def counters(self, sandbox_id: str) -> dict[str, Any]:
        """The sandbox's counters (zeros when it never called the gateway)."""
        try:
            found: dict[str, Any] = json.loads(
                (self.state_dir / "counters" / f"{sandbox_id}.json").read_text()
            )
        except (FileNotFoundError, ValueError):
            found = {}
        return {
            "requests": int(found.get("requests", 0)),
            "bytes_in": int(found.get("bytes_in", 0)),
            "bytes_out": int(found.get("bytes_out", 0)),
            "status": {str(k): int(v) for k, v in dict(found.get("status", {})).items()},
        }


def git_env(gateway_url: str, sandbox_token: str, hosts: list[str]) -> dict[str, str]:
    """Environment that sends the sandbox's git traffic for ``hosts`` through the gateway.

    Git's config from the environment (``GIT_CONFIG_COUNT``, git >= 2.31), so nothing is written to a
    file: ``url.<gateway>/git/<host>/.insteadOf https://<host>/`` for each host, and the sandbox's
    token as an extra header on requests to the gateway, which swaps in the granted credential."""
    if not hosts:
        return {}
    base = gateway_url.rstrip("/") + "/git/"
    pairs = [(f"url.{base}{host}/.insteadOf", f"https://{host}/") for host in hosts]
    pairs.append((f"http.{base}.extraHeader", f"x-api-key: {sandbox_token}"))
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def model_activity(state_dir: str | os.PathLike[str], sandbox_id: str) -> datetime | None:
    """The mtime of ``activity/<sandbox id>`` as an aware UTC time, or None when there is none.

    For a provider's ``last_activity(ref)``: merge it with what else the provider saw (the newer wins)."""
    try:
        mtime = (Path(state_dir) / "activity" / sandbox_id).stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    return datetime.fromtimestamp(mtime, UTC)


def prepare_gateway(settings: Settings) -> GatewayState:
    """The state directory ready for a gateway: ``upstream.json`` from the backend's settings."""
    state = GatewayState.from_settings(settings)
    state.write_upstream(settings.anthropic_base_url, settings.anthropic_api_key)
    return state
