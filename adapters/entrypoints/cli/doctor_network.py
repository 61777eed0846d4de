"""The doctor's checks of the sandboxes' way out: the egress point (Docker) and the model gateway (E2B).

Docker: the deployment's egress container (docs/network.md) and the state directory it shares with the
backend. E2B with ``SANDBOX_GATEWAY_PUBLIC_URL``: that the gateway answers there, and that it reads the
same state directory as this host (a probe token issued here must be known to it). See docs/gateway.md.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox_lifecycle.adapters.composition.settings import first_line
from sandbox_lifecycle.adapters.egress.main import GATEWAY_PORT
from sandbox_lifecycle.adapters.egress.tokens import issue_token, revoke_token
from sandbox_lifecycle.adapters.entrypoints.cli.doctor import FAIL, NOT_CONFIGURED, OK, WARN, Check, Context

if TYPE_CHECKING:
    from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks

_PROBE_TIMEOUT_S = 5.0
# Statuses our gateway gives a request without a usable token, or a path it does not forward: it is up.
_UP = frozenset({200, 401, 403, 404})
_SEVERITY = {OK: 0, NOT_CONFIGURED: 0, WARN: 1, FAIL: 2}


def check_egress_point(ctx: Context) -> Check:
    s = ctx.settings
    if s.provider != "docker":
        return Check("egress point", OK, "kept by E2B (each sandbox's allow-list is set on create)")
    if ctx.provider is None:
        return Check(
            "egress point", FAIL, "skipped: the Docker engine is unreachable", "fix the provider first"
        )
    networks = ctx.provider.network
    found = networks.inspect_egress()
    running = bool(found and (found.get("State") or {}).get("Running"))
    parts = [_egress_container(networks, found), _state_dir(Path(networks.state_dir))]
    if running:
        # Running is not working: a request through the proxy's own path says whether it answers.
        probe = networks.probe_egress(found)
        if probe.ok:
            parts.append(Check("", OK, probe.detail))
        else:
            parts.append(
                Check(
                    "",
                    FAIL,
                    f"the egress proxy does not answer: {probe.detail}",
                    "the next sandbox create restarts it; or now: "
                    f"`docker restart {networks.egress_name}` (sandboxes keep their policies)",
                )
            )
    # The backend writes upstream.json before it starts the container: a running one must have it.
    parts.append(_upstream(Path(networks.state_dir), bool(s.anthropic_api_key), running))
    return _combined("egress point", parts)


def check_gateway(ctx: Context) -> Check:
    s = ctx.settings
    if s.provider == "docker":
        return Check(
            "gateway", OK, f"served by the egress container on port {GATEWAY_PORT} (see egress point)"
        )
    url = s.e2b.gateway_url
    if url is None:
        return Check(
            "gateway",
            NOT_CONFIGURED,
            "off: E2B sandboxes hold ANTHROPIC_API_KEY themselves",
            "set SANDBOX_GATEWAY_PUBLIC_URL and run `sandboxctl gateway` to keep the key out of sandboxes",
        )
    state_dir = s.e2b.gateway_state_dir or s.egress_state_dir
    answer = _get(url, "/healthz")
    if isinstance(answer, str) or answer not in _UP:
        what = answer if isinstance(answer, str) else f"HTTP {answer}"
        return Check(
            "gateway",
            FAIL,
            f"no gateway answers at {url} ({what})",
            "run `sandboxctl gateway` (sharing SANDBOX_EGRESS_STATE_DIR with the backend) behind the TLS "
            "endpoint SANDBOX_GATEWAY_PUBLIC_URL names",
        )
    return _combined("gateway", [_shared(url, state_dir), _upstream(state_dir, True, True)])


def _egress_container(networks: SandboxNetworks, found: dict[str, Any] | None) -> Check:
    from sandbox_lifecycle.adapters.providers.docker.network import LABEL_DEPLOYMENT, LABEL_ROLE, ROLE_EGRESS

    name, deployment = networks.egress_name, networks.deployment
    if found is None:
        return Check("", OK, f"{name} not running: it starts on first need (the first sandbox create)")
    labels = (found.get("Config") or {}).get("Labels") or {}
    if labels.get(LABEL_ROLE) != ROLE_EGRESS or labels.get(LABEL_DEPLOYMENT) != deployment:
        return Check(
            "",
            FAIL,
            f"a container named {name} is not this deployment's egress point: creates fail",
            f"remove or rename it (`docker rm -f {name}`)",
        )
    state = found.get("State") or {}
    if not state.get("Running"):
        return Check(
            "",
            WARN,
            f"{name} is {state.get('Status', 'stopped')}: the next sandbox create starts it again",
            f"`docker logs {name}` says why it stopped",
        )
    attached = set((found.get("NetworkSettings") or {}).get("Networks") or {}) - {"bridge"}
    return Check("", OK, f"{name} running, on {len(attached)} sandbox networks")


def _state_dir(path: Path) -> Check:
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK | os.X_OK):
            return Check("", OK, f"state dir {path} is created on first need")
        return Check(
            "",
            FAIL,
            f"state dir {path} is missing and {parent} is not writable by this user",
            f"create it: `install -d -m 700 -o $(id -u) {path}` (or set SANDBOX_EGRESS_STATE_DIR)",
        )
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        return Check(
            "", FAIL, f"state dir {path} is not a directory", "remove it or set SANDBOX_EGRESS_STATE_DIR"
        )
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        return Check(
            "",
            FAIL,
            f"state dir {path} is not writable by this user",
            f"`chown $(id -u) {path}` (the egress program runs as its owner)",
        )
    if info.st_mode & 0o077:
        return Check(
            "",
            FAIL,
            f"state dir {path} is mode {stat.S_IMODE(info.st_mode):o}: others may read the key and tokens",
            f"`chmod 700 {path}`",
        )
    return Check("", OK, f"state dir {path} private (0700)")


def _upstream(state_dir: Path, key_set: bool, expected: bool) -> Check:
    """``upstream.json`` (the real key): needed once a gateway serves from ``state_dir``."""
    if not key_set:
        return Check(
            "",
            WARN,
            "ANTHROPIC_API_KEY is unset: the gateway has no key, sandboxes' model calls fail",
            "set ANTHROPIC_API_KEY on the backend",
        )
    path = state_dir / "upstream.json"
    try:
        info = path.stat()
        upstream = json.loads(path.read_text())
    except FileNotFoundError:
        if not expected:
            return Check("", OK, "upstream.json is written before the first sandbox starts")
        return Check(
            "",
            FAIL,
            f"{path} is missing: the gateway answers model calls with 503",
            "create a sandbox (Docker writes it first) or restart `sandboxctl gateway` (E2B)",
        )
    except (OSError, ValueError) as exc:
        return Check("", FAIL, f"{path} is unreadable ({first_line(str(exc))})", "delete it; it is rewritten")
    if stat.S_IMODE(info.st_mode) & 0o077:
        return Check("", FAIL, f"{path} is readable by others (it holds the key)", f"`chmod 600 {path}`")
    if not isinstance(upstream, dict) or not upstream.get("api_key") or not upstream.get("url"):
        return Check("", FAIL, f"{path} holds no url or key", "delete it; it is rewritten")
    return Check("", OK, f"upstream.json forwards to {upstream['url']}")


def _shared(url: str, state_dir: Path) -> Check:
    """A token issued in this host's state dir is known to the gateway: they read the same files."""
    probe = f"doctor-probe-{secrets.token_hex(6)}"
    try:
        token = issue_token(state_dir, probe)
    except OSError as exc:
        return Check(
            "",
            FAIL,
            f"state dir {state_dir} is not writable ({exc.strerror or type(exc).__name__})",
            "point SANDBOX_EGRESS_STATE_DIR at a directory this user may write",
        )
    try:
        answer = _get(url, "/doctor-probe", token)
    finally:
        revoke_token(state_dir, probe)
    if answer == 403:  # the token was accepted; the path is not a model call
        return Check("", OK, f"gateway up at {url}, sharing state dir {state_dir}")
    if answer == 401:
        return Check(
            "",
            FAIL,
            f"the gateway at {url} does not read this host's state dir {state_dir}: every sandbox token "
            "is refused",
            "run `sandboxctl gateway` with the same SANDBOX_EGRESS_STATE_DIR (this host, or a shared volume)",
        )
    what = answer if isinstance(answer, str) else f"HTTP {answer}"
    return Check(
        "",
        WARN,
        f"gateway up at {url}; could not tell whether it shares {state_dir} ({what})",
        "make sure whatever is in front of it forwards every path to `sandboxctl gateway`",
    )


def _get(url: str, path: str, token: str | None = None) -> int | str:
    """The HTTP status of GET url+path, or why there was none."""
    request = urllib.request.Request(url.rstrip("/") + path, headers={"x-api-key": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return first_line(str(reason)) or type(exc).__name__


def _combined(name: str, parts: list[Check]) -> Check:
    worst = max(parts, key=lambda c: _SEVERITY[c.status]).status
    fixes = [c.fix for c in parts if c.fix and c.status != OK]
    return Check(name, worst, "; ".join(c.detail for c in parts), "; ".join(fixes) or None)


SLOT_CHECKS = {"egress point": check_egress_point, "gateway": check_gateway}
