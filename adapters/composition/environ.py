"""Reading the environment: the reader that collects every problem, and the variables several parts share.

The root settings (``composition.settings``) and each provider's own settings (``providers/<name>/
settings.py``) read through one :class:`EnvReader`, so one ``ConfigError`` names every bad variable at
once. What more than one of them needs is read here once: the idle timeout, the deployment, the model API
the gateway forwards to and its state directory (:class:`Shared`), the kinds' egress allow-lists and the
rules for URLs that carry a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.events.values import FieldValues, value_class

# Used in Docker labels, E2B metadata, S3 keys and directory names: a label charset, bounded, and never
# '.'/'..' or a leading '-' (a path component, not an option).
DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
DEPLOYMENT_RULE = "1-63 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"

# Deadlines are stored as times: ten years keeps now + timeout far inside what a datetime and the
# database can hold, and is longer than any sensible timer.
MAX_TIMER_MS = 10 * 365 * 24 * 3600 * 1000
_DIGITS = re.compile(r"[0-9]+")

DEFAULT_IDLE_TIMEOUT_MS = 1_800_000

_AGENT_API = ("api.anthropic.com",)
DEFAULT_EGRESS_ALLOW: dict[str, tuple[str, ...]] = {
    DATA_APP: _AGENT_API,
    # The writeback agent pushes branches to the customer's git host.
    AI_WRITEBACK: (*_AGENT_API, "github.com", "gitlab.com", "bitbucket.org"),
}

# The model API the gateway forwards to when the backend's ANTHROPIC_BASE_URL is unset.
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
# Where the egress point and the backend share tokens, the upstream key, activity and counters.
DEFAULT_EGRESS_STATE_ROOT = Path("/var/lib/sandbox-lifecycle/egress")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class EnvReader:
    """Reads variables from one mapping and collects every problem, so one error can name them all."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        """The stripped value, or None when unset or empty (an empty variable means "use the default")."""
        raw = self.env.get(name)
        value = raw.strip() if raw is not None else ""
        return value or None

    def bad(self, message: str) -> None:
        if message not in self.problems:  # a variable read for two providers is one problem
            self.problems.append(message)

    def integer(self, name: str, default: int, maximum: int, unit: str, minimum: int = 1) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        # ASCII digits only: int() would also take '+5', '1_000' and other scripts' digits.
        value = int(raw) if _DIGITS.fullmatch(raw) and len(raw) <= 30 else -1
        if not minimum <= value <= maximum:
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            self.bad(f"{name} must be a whole number of {unit} from {minimum} to {maximum}, got {shown!r}")
            return default
        return value

    def millis(self, name: str, default: int, maximum: int = MAX_TIMER_MS) -> timedelta:
        return timedelta(milliseconds=self.integer(name, default, maximum, "milliseconds"))

    def raise_problems(self) -> None:
        if len(self.problems) == 1:
            raise ConfigError(self.problems[0])
        if self.problems:
            raise ConfigError(f"{len(self.problems)} settings are invalid: " + "; ".join(self.problems))


@value_class
class Shared(FieldValues):
    """What the root reads once and every provider's settings may build on."""

    idle_timeout: timedelta
    deployment: str
    # The gateway's side: where it forwards model calls, with which key, and its shared state directory.
    anthropic_base_url: str
    anthropic_api_key: str = field(repr=False)
    egress_state_dir: Path


def shared_values(reader: EnvReader, deployment: str) -> Shared:
    return Shared(
        idle_timeout=idle_timeout(reader),
        deployment=deployment,
        anthropic_base_url=anthropic_base_url(reader),
        anthropic_api_key=reader.text("ANTHROPIC_API_KEY") or "",
        egress_state_dir=egress_state_dir(reader, deployment),
    )


def idle_timeout(reader: EnvReader) -> timedelta:
    return reader.millis("SANDBOX_IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT_MS)


def egress_env_name(kind: str) -> str:
    """``SANDBOX_EGRESS_ALLOW_DATA_APP`` for ``data-app``: comma-separated hosts replacing the default."""
    return "SANDBOX_EGRESS_ALLOW_" + kind.upper().replace("-", "_")


def egress_allow(reader: EnvReader) -> dict[str, tuple[str, ...]]:
    """Each kind's allow-list: its variable (set but empty denies everything) or the default, plus the
    host of SANDBOX_LIGHTDASH_URL, which the agent of either kind validates its work against."""
    lightdash = _lightdash_entry(reader)
    egress = {}
    for kind, default in DEFAULT_EGRESS_ALLOW.items():
        raw = reader.env.get(egress_env_name(kind))
        hosts = default if raw is None else tuple(h.strip() for h in raw.split(",") if h.strip())
        if lightdash and lightdash not in hosts:
            hosts = (*hosts, lightdash)
        egress[kind] = hosts
    return egress


def _lightdash_entry(reader: EnvReader) -> str | None:
    url = reader.text("SANDBOX_LIGHTDASH_URL")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        reader.bad(f"SANDBOX_LIGHTDASH_URL must be an http:// or https:// URL, got {url!r}")
        return None
    return parts.hostname if port is None else f"{parts.hostname}:{port}"


def http_url(reader: EnvReader, name: str, value: str) -> str | None:
    """``value`` when it is an http(s) URL with a host, plain http only to loopback; else a problem.

    Plain HTTP to anywhere else would carry a key or a token in clear text."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.bad(f"{name} must be an https:// URL (http:// only to a loopback host), got {value!r}")
        return None
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        reader.bad(
            f"{name} is plain http:// to {parts.hostname}, which would send credentials in clear text: "
            "use https:// (plain http is only for a loopback host)"
        )
        return None
    return value.rstrip("/")


def anthropic_base_url(reader: EnvReader) -> str:
    raw = reader.text("ANTHROPIC_BASE_URL")
    if raw is None:
        return DEFAULT_ANTHROPIC_BASE_URL
    return http_url(reader, "ANTHROPIC_BASE_URL", raw) or DEFAULT_ANTHROPIC_BASE_URL


def egress_state_dir(reader: EnvReader, deployment: str) -> Path:
    raw = reader.text("SANDBOX_EGRESS_STATE_DIR")
    if raw is not None:
        return Path(raw)
    return DEFAULT_EGRESS_STATE_ROOT / (deployment if DEPLOYMENT_NAME.fullmatch(deployment) else "default")
