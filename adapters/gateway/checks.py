"""The doctor's checks of the gateway's state directory and of a gateway serving from it.

The egress container (Docker) and `sandboxctl gateway` (E2B with ``SANDBOX_GATEWAY_PUBLIC_URL``) read
the same files (``adapters.gateway.state``): the providers' doctor checks use these. See docs/gateway.md.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import urllib.error
import urllib.request
from pathlib import Path

from sandbox_lifecycle.adapters.composition.scrubbing import first_line
from sandbox_lifecycle.adapters.egress.tokens import issue_token, revoke_token
from sandbox_lifecycle.adapters.observability.health import FAIL, OK, WARN, Check, combined

_PROBE_TIMEOUT_S = 5.0
# Statuses our gateway gives a request without a usable token, or a path it does not forward: it is up.
_UP = frozenset({200, 401, 403, 404})


def check_gateway_at(url: str, state_dir: Path) -> Check:
    """A gateway answers at ``url``, reads this host's ``state_dir``, and has its upstream there."""
    answer = probe(url, "/healthz")
    if isinstance(answer, str) or answer not in _UP:
        what = answer if isinstance(answer, str) else f"HTTP {answer}"
        return Check(
            "gateway",
            FAIL,
            f"no gateway answers at {url} ({what})",
            "run `sandboxctl gateway` (sharing SANDBOX_EGRESS_STATE_DIR with the backend) behind the TLS "
            "endpoint SANDBOX_GATEWAY_PUBLIC_URL names",
        )
    return combined("gateway", [_shared(url, state_dir), check_upstream(state_dir, True, True)])


def check_state_dir(path: Path) -> Check:
    """The state directory exists (or can be made), is ours and private."""
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


def check_upstream(state_dir: Path, key_set: bool, expected: bool) -> Check:
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
    token_owner = f"doctor-probe-{secrets.token_hex(6)}"
    try:
        token = issue_token(state_dir, token_owner)
    except OSError as exc:
        return Check(
            "",
            FAIL,
            f"state dir {state_dir} is not writable ({exc.strerror or type(exc).__name__})",
            "point SANDBOX_EGRESS_STATE_DIR at a directory this user may write",
        )
    try:
        answer = probe(url, "/doctor-probe", token)
    finally:
        revoke_token(state_dir, token_owner)
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


def probe(url: str, path: str, token: str | None = None) -> int | str:
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
