"""The E2B provider's settings: its key, templates, allow-lists, timeouts and the model gateway it uses.

Parsed from the environment by ``PROVIDER.parse`` (this folder's ``__init__``) with every other setting,
so one ``ConfigError`` names every bad variable; stdlib only (every command imports it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sandbox_lifecycle.adapters.composition.environ import (
    DEFAULT_EGRESS_ALLOW,
    DEFAULT_IDLE_TIMEOUT_MS,
    MAX_TIMER_MS,
    EnvReader,
    egress_allow,
    egress_state_dir,
    http_url,
    idle_timeout,
)
from sandbox_lifecycle.adapters.composition.version import package_version
from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.events.values import FieldValues, value_class

# E2B's own timeout is only the safety net behind our idle timer, so it must outlast it.
E2B_TIMEOUT_MARGIN_S = 600
DEFAULT_TEMPLATE_NAMES = {
    DATA_APP: "lightdash/lightdash-data-app",
    AI_WRITEBACK: "lightdash/lightdash-ai-writeback",
}
# (name variable, tag variable) per kind: the seed's environment table.
TEMPLATE_ENV = {
    DATA_APP: ("E2B_TEMPLATE_NAME", "E2B_TEMPLATE_TAG"),
    AI_WRITEBACK: ("E2B_AI_WRITEBACK_TEMPLATE_NAME", "E2B_AI_WRITEBACK_TEMPLATE_TAG"),
}
# Envs of this process handed to every E2B sandbox (the agent needs its API key); values are secrets.
SANDBOX_ENV_PASSTHROUGH = ("ANTHROPIC_API_KEY",)

E2B_KEY_MISSING = (
    "E2B_API_KEY is not set; the E2B provider needs an API key "
    "(https://e2b.dev/dashboard?tab=keys), or set SANDBOX_PROVIDER=docker for local runs"
)


class TemplateNames(Mapping[str, str]):
    """kind -> E2B template id ``name:tag``, a tag left unset being this release's version, looked up
    (see ``package_version``) the first time a template without a tag is read, which a Docker
    deployment never does."""

    def __init__(self, names: Mapping[str, tuple[str, str | None]]) -> None:
        self._names = dict(names)

    def __getitem__(self, kind: str) -> str:
        name, tag = self._names[kind]
        return f"{name}:{tag or package_version()}"

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(dict(self))


@value_class
class E2BSettings(FieldValues):
    """What the E2B provider needs. ``api_key`` is empty when unset."""

    api_key: str = field(repr=False)
    # kind -> template id "name:tag"
    templates: Mapping[str, str]
    egress_allow: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_EGRESS_ALLOW))
    sandbox_envs: Mapping[str, str] = field(default_factory=dict, repr=False)
    api_url: str | None = None
    sandbox_url: str | None = None
    domain: str | None = None
    # Seconds a running E2B sandbox lives without being extended before E2B pauses it.
    sandbox_timeout: int = DEFAULT_IDLE_TIMEOUT_MS // 1000 + E2B_TIMEOUT_MARGIN_S
    request_timeout: float = 30.0
    # The sandbox user the images create (core.kinds.HOME is its home).
    user: str = "sandbox"
    retry_attempts: int = 4
    retry_base_delay: float = 0.25
    retry_max_delay: float = 4.0
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 64 << 20
    list_page_size: int = 100
    # SANDBOX_GATEWAY_PUBLIC_URL: when set, sandboxes get it as ANTHROPIC_BASE_URL and a per-sandbox
    # token instead of the real key, which then stays out of `sandbox_envs`.
    gateway_url: str | None = None
    gateway_state_dir: Path | None = None
    # E2B_CHECKPOINTS: each suspend kept as a named E2B snapshot, so rewind and fork work (two calls per
    # suspend instead of one, and snapshot storage; docs/checkpoints.md). Off by default.
    checkpoints: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> E2BSettings:
        """The E2B part of the settings; ConfigError when a value is bad or the API key is missing."""
        reader = EnvReader(environ)
        settings = e2b_settings(reader, idle_timeout(reader))
        if not settings.api_key:
            reader.bad(E2B_KEY_MISSING)
        reader.raise_problems()
        return settings

    def require_key(self) -> None:
        if not self.api_key:
            raise ConfigError(E2B_KEY_MISSING)


def e2b_settings(reader: EnvReader, idle: timedelta, deployment: str = "default") -> E2BSettings:
    templates = TemplateNames(
        {
            kind: (reader.text(name_var) or DEFAULT_TEMPLATE_NAMES[kind], reader.text(tag_var))
            for kind, (name_var, tag_var) in TEMPLATE_ENV.items()
        }
    )
    egress = egress_allow(reader)
    idle_s = int(idle.total_seconds())
    timeout_ms = reader.integer(
        "E2B_SANDBOX_TIMEOUT_MS", (idle_s + E2B_TIMEOUT_MARGIN_S) * 1000, MAX_TIMER_MS, "milliseconds"
    )
    gateway_url = _gateway_url(reader)
    gateway_host = urlsplit(gateway_url).hostname if gateway_url else None
    if gateway_host:
        # Without it the sandbox could not reach its model at all.
        egress = {
            kind: (*hosts, gateway_host) if gateway_host not in hosts else hosts
            for kind, hosts in egress.items()
        }
    # With the gateway the real key stays here: the sandbox gets a token (see adapters.gateway.state).
    passthrough = () if gateway_url else SANDBOX_ENV_PASSTHROUGH
    return E2BSettings(
        api_key=reader.text("E2B_API_KEY") or "",
        templates=templates,
        egress_allow=egress,
        sandbox_envs={k: v for k in passthrough if (v := reader.env.get(k, ""))},
        api_url=reader.text("E2B_API_URL"),
        sandbox_url=reader.text("E2B_SANDBOX_URL"),
        domain=reader.text("E2B_DOMAIN"),
        sandbox_timeout=max(1, timeout_ms // 1000),
        gateway_url=gateway_url,
        gateway_state_dir=egress_state_dir(reader, deployment) if gateway_url else None,
        checkpoints=_switch(reader, "E2B_CHECKPOINTS"),
    )


_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def _switch(reader: EnvReader, name: str) -> bool:
    """An on/off variable, off when unset; anything else is reported with the other bad values."""
    raw = (reader.text(name) or "").lower()
    if raw and raw not in _ON + _OFF:
        reader.bad(f"{name} must be one of {', '.join(_ON + _OFF)}, got {raw!r}")
    return raw in _ON


def _gateway_url(reader: EnvReader) -> str | None:
    raw = reader.text("SANDBOX_GATEWAY_PUBLIC_URL")
    if raw is None:
        return None
    url = http_url(reader, "SANDBOX_GATEWAY_PUBLIC_URL", raw)
    if url is not None and not reader.text("ANTHROPIC_API_KEY"):
        reader.bad(
            "SANDBOX_GATEWAY_PUBLIC_URL is set but ANTHROPIC_API_KEY is not: the gateway needs the key"
        )
    return url
