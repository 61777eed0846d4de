"""Settings read from the environment: the product's interface. Names are fixed; values are validated.

The environment is read here and nowhere else: :meth:`Settings.from_env` parses every variable, the
providers' and the snapshot store's included, and raises one ``ConfigError`` naming every bad variable
and what would be valid. The adapters receive typed values (``E2BSettings``, ``S3Settings``) and never
look at the environment themselves.

Hand-written rather than on pydantic-settings: importing pydantic-settings costs ~0.3 s of CPU on the
machines we measured, which every `sandboxctl` call would pay; this module costs a few milliseconds.
Secrets (API keys, the S3 secret, the database password) are kept out of every repr and message.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from sandbox_lifecycle.core.errors import ConfigError, ProviderRefused
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.events.names import redact_url
from sandbox_lifecycle.events.values import FieldValues, value_class

if TYPE_CHECKING:
    # Loaded when the limits are read: the capacity module brings the transition table with it.
    from sandbox_lifecycle.core.capacity import Capacity

PROVIDERS = ("e2b", "docker")
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
_SUPPORTED_DATABASES = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"

# Used in Docker labels, E2B metadata, S3 keys and directory names: a label charset, bounded, and never
# '.'/'..' or a leading '-' (a path component, not an option).
DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
DEPLOYMENT_RULE = "1-63 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"

# Deadlines are stored as times: ten years keeps now + timeout far inside what a datetime and the
# database can hold, and is longer than any sensible timer.
MAX_TIMER_MS = 10 * 365 * 24 * 3600 * 1000
MAX_SWEEP_INTERVAL_MS = 24 * 3600 * 1000
MAX_DISK_LIMIT_MB = 16 * 1024 * 1024  # 16 TiB
_DIGITS = re.compile(r"[0-9]+")

DEFAULT_IDLE_TIMEOUT_MS = 1_800_000
DEFAULT_DISK_LIMIT_MB = 10_240
# E2B's own timeout is only the safety net behind our idle timer, so it must outlast it.
E2B_TIMEOUT_MARGIN_S = 600

DEFAULT_DOCKER_IMAGES = {DATA_APP: "lightdash-sandbox:local", AI_WRITEBACK: "lightdash-ai-writeback:local"}
DOCKER_IMAGE_ENV = {DATA_APP: "SANDBOX_DOCKER_IMAGE", AI_WRITEBACK: "SANDBOX_AI_WRITEBACK_DOCKER_IMAGE"}
DEFAULT_TEMPLATE_NAMES = {
    DATA_APP: "lightdash/lightdash-data-app",
    AI_WRITEBACK: "lightdash/lightdash-ai-writeback",
}
# (name variable, tag variable) per kind: the seed's environment table.
TEMPLATE_ENV = {
    DATA_APP: ("E2B_TEMPLATE_NAME", "E2B_TEMPLATE_TAG"),
    AI_WRITEBACK: ("E2B_AI_WRITEBACK_TEMPLATE_NAME", "E2B_AI_WRITEBACK_TEMPLATE_TAG"),
}
_AGENT_API = ("api.anthropic.com",)
DEFAULT_EGRESS_ALLOW: dict[str, tuple[str, ...]] = {
    DATA_APP: _AGENT_API,
    # The writeback agent pushes branches to the customer's git host.
    AI_WRITEBACK: (*_AGENT_API, "github.com", "gitlab.com", "bitbucket.org"),
}
# Envs of this process handed to every E2B sandbox (the agent needs its API key); values are secrets.
SANDBOX_ENV_PASSTHROUGH = ("ANTHROPIC_API_KEY",)
# Variables whose values must never be shown, whatever they hold.
# SANDBOX_AUDIT_SIGNING_KEY names a key file, but a deployment may put the PEM key itself there.
SECRET_ENV = (
    "E2B_API_KEY",
    "ANTHROPIC_API_KEY",
    "S3_SECRET_KEY",
    "SANDBOX_WEBHOOK_SECRET",
    "SANDBOX_AUDIT_SIGNING_KEY",
)

# The model API the gateway forwards to when the backend's ANTHROPIC_BASE_URL is unset.
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
# Where the egress point and the backend share tokens, the upstream key, activity and counters.
DEFAULT_EGRESS_STATE_ROOT = Path("/var/lib/sandbox-lifecycle/egress")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

E2B_KEY_MISSING = (
    "E2B_API_KEY is not set; the E2B provider needs an API key "
    "(https://e2b.dev/dashboard?tab=keys), or set SANDBOX_PROVIDER=docker for local runs"
)


@functools.cache
def package_version() -> str:
    """This release's version: the default tag of the E2B templates.

    importlib.metadata is imported here, when a version is wanted: with what it loads (email, zipfile)
    and the search for the installed distribution it costs more than a short command's own work.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sandbox-lifecycle")
    except PackageNotFoundError:
        return "latest"


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


def egress_env_name(kind: str) -> str:
    """``SANDBOX_EGRESS_ALLOW_DATA_APP`` for ``data-app``: comma-separated hosts replacing the default."""
    return "SANDBOX_EGRESS_ALLOW_" + kind.upper().replace("-", "_")


class _Reader:
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
class E2BSettings(FieldValues):
    """What the E2B provider needs; parsed by :class:`Settings`. ``api_key`` is empty when unset."""

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> E2BSettings:
        """The E2B part of the settings; ConfigError when a value is bad or the API key is missing."""
        reader = _Reader(environ)
        settings = _e2b_settings(reader, _idle_ms(reader))
        if not settings.api_key:
            reader.bad(E2B_KEY_MISSING)
        reader.raise_problems()
        return settings

    def require_key(self) -> None:
        if not self.api_key:
            raise ConfigError(E2B_KEY_MISSING)


@value_class
class S3Settings(FieldValues):
    """Where Docker snapshots go when ``S3_BUCKET`` is set."""

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)


DEFAULT_NETWORK_POOL = "10.213.0.0/16"


@value_class
class EgressSettings(FieldValues):
    """The network of Docker sandboxes (see docs/network.md): what each kind may reach through the
    egress point, names pinned to addresses, where the egress state lives, which addresses the
    per-sandbox networks take, and the model API the gateway forwards to."""

    allow: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_EGRESS_ALLOW))
    # host:port:address entries (curl's --resolve form)
    resolve: tuple[str, ...] = ()
    # None: /var/lib/sandbox-lifecycle/egress/<deployment>
    state_dir: Path | None = None
    network_pool: str = DEFAULT_NETWORK_POOL
    upstream_url: str = DEFAULT_ANTHROPIC_BASE_URL
    api_key: str = field(default="", repr=False)


def _egress_settings(reader: _Reader, upstream_url: str, api_key: str, state_dir: Path) -> EgressSettings:
    allow = _egress_allow(reader)
    resolve = tuple(e.strip() for e in (reader.text("SANDBOX_EGRESS_RESOLVE") or "").split(",") if e.strip())
    if allow != DEFAULT_EGRESS_ALLOW or resolve:
        # The policy parser (with socket and json) is loaded to check what the environment changed; the
        # defaults are valid (a test parses them), and every command reads these settings.
        from sandbox_lifecycle.adapters.egress.policy import PolicyError, parse_pin, parse_rules

        for kind, entries in allow.items():
            try:
                parse_rules(entries)
            except PolicyError as exc:
                reader.bad(f"{egress_env_name(kind)}: {exc}")
        for entry in resolve:
            try:
                parse_pin(entry)
            except PolicyError as exc:
                reader.bad(f"SANDBOX_EGRESS_RESOLVE: {exc}")
    pool = reader.text("SANDBOX_DOCKER_NETWORK_POOL") or DEFAULT_NETWORK_POOL
    if pool != DEFAULT_NETWORK_POOL and not _network_pool_ok(pool):
        reader.bad(f"SANDBOX_DOCKER_NETWORK_POOL must be an IPv4 network of /28 or larger, got {pool!r}")
    return EgressSettings(
        allow=allow,
        resolve=resolve,
        state_dir=state_dir,
        network_pool=pool,
        upstream_url=upstream_url,
        api_key=api_key,
    )


def _network_pool_ok(pool: str) -> bool:
    """An IPv4 network of /28 or larger. Asked of a pool the environment sets only (the default is one):
    ipaddress is loaded here, for the few commands that need it."""
    import ipaddress

    try:
        network = ipaddress.ip_network(pool)
    except ValueError:
        return False
    return network.version == 4 and network.prefixlen <= 28


def _idle_ms(reader: _Reader) -> timedelta:
    return reader.millis("SANDBOX_IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT_MS)


def _e2b_settings(reader: _Reader, idle: timedelta, deployment: str = "default") -> E2BSettings:
    templates = TemplateNames(
        {
            kind: (reader.text(name_var) or DEFAULT_TEMPLATE_NAMES[kind], reader.text(tag_var))
            for kind, (name_var, tag_var) in TEMPLATE_ENV.items()
        }
    )
    egress = _egress_allow(reader)
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
    # With the gateway the real key stays here: the sandbox gets a token (see adapters.gateway_state).
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
        gateway_state_dir=_egress_state_dir(reader, deployment) if gateway_url else None,
    )


def _egress_allow(reader: _Reader) -> dict[str, tuple[str, ...]]:
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


def _lightdash_entry(reader: _Reader) -> str | None:
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


def _http_url(reader: _Reader, name: str, value: str) -> str | None:
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


def _gateway_url(reader: _Reader) -> str | None:
    raw = reader.text("SANDBOX_GATEWAY_PUBLIC_URL")
    if raw is None:
        return None
    url = _http_url(reader, "SANDBOX_GATEWAY_PUBLIC_URL", raw)
    if url is not None and not reader.text("ANTHROPIC_API_KEY"):
        reader.bad(
            "SANDBOX_GATEWAY_PUBLIC_URL is set but ANTHROPIC_API_KEY is not: the gateway needs the key"
        )
    return url


def _anthropic_base_url(reader: _Reader) -> str:
    raw = reader.text("ANTHROPIC_BASE_URL")
    if raw is None:
        return DEFAULT_ANTHROPIC_BASE_URL
    return _http_url(reader, "ANTHROPIC_BASE_URL", raw) or DEFAULT_ANTHROPIC_BASE_URL


def _egress_state_dir(reader: _Reader, deployment: str) -> Path:
    raw = reader.text("SANDBOX_EGRESS_STATE_DIR")
    if raw is not None:
        return Path(raw)
    return DEFAULT_EGRESS_STATE_ROOT / (deployment if DEPLOYMENT_NAME.fullmatch(deployment) else "default")


def _s3_settings(reader: _Reader) -> S3Settings | None:
    access_key, secret_key = reader.text("S3_ACCESS_KEY"), reader.text("S3_SECRET_KEY")
    if (access_key is None) != (secret_key is None):
        reader.bad(
            "set both S3_ACCESS_KEY and S3_SECRET_KEY, or neither to use the default AWS credential chain"
        )
    endpoint = reader.text("S3_ENDPOINT")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        reader.bad(f"S3_ENDPOINT must be an http:// or https:// URL, got {endpoint!r}")
    bucket = reader.text("S3_BUCKET")
    if bucket is None:
        return None
    return S3Settings(
        bucket=bucket,
        endpoint_url=endpoint,
        region=reader.text("S3_REGION"),
        access_key=access_key,
        secret_key=secret_key,
    )


def default_data_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("SANDBOX_DATA_DIR"):
        return Path(environ["SANDBOX_DATA_DIR"])
    base = environ.get("XDG_DATA_HOME") or os.path.join(environ.get("HOME", "/root"), ".local", "share")
    return Path(base) / "sandbox-lifecycle"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    path = url.split("://", 1)[1] if "://" in url else ""
    path = unquote(path[1:] if path.startswith("/") else path).split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _database_url(reader: _Reader, data_dir: Path) -> str:
    default = f"sqlite:///{data_dir / 'sandbox.db'}"
    url = reader.text("SANDBOX_DATABASE_URL")
    if url is None:
        return default
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme not in DATABASE_SCHEMES:
        hint = (
            " (plain postgresql:// means psycopg2, which is not used here)"
            if scheme in ("postgresql", "postgres")
            else ""
        )
        reader.bad(f"SANDBOX_DATABASE_URL must be {_SUPPORTED_DATABASES}{hint}, got {redact_url(url)!r}")
        return default
    if scheme.startswith("sqlite"):
        path = sqlite_path(url)
        # The data dir is ours and made on first use; anywhere else the directory must already exist,
        # so a typo does not silently create directories (as whoever runs this) and an empty log there.
        if path is not None and path.parent != data_dir and not path.parent.is_dir():
            reader.bad(
                f"SANDBOX_DATABASE_URL names a SQLite file in {path.parent}, which does not exist: "
                "create the directory, or unset the variable to use the embedded default"
            )
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        reader.bad(f"SANDBOX_DATABASE_URL is not a valid URL ({_SUPPORTED_DATABASES}): {redact_url(url)!r}")
    return url


def _snapshot_dir(reader: _Reader, data_dir: Path) -> Path:
    raw = reader.text("SANDBOX_SNAPSHOT_DIR")
    if raw is None:
        return data_dir / "snapshots"
    path = Path(raw)
    if not path.parent.is_dir():
        reader.bad(
            f"SANDBOX_SNAPSHOT_DIR is {raw!r}, whose parent directory does not exist: create it, or unset "
            "the variable to keep snapshots in the data dir"
        )
    return path


@value_class(slots=False)
class Settings(FieldValues):
    """Everything the module reads from its environment, parsed and checked once (``from_env``)."""

    provider: str
    # May hold a password: kept out of repr (and so out of logs and tracebacks).
    database_url: str = field(repr=False)
    data_dir: Path
    policy: Policy
    snapshot_dir: Path
    s3: S3Settings | None = None
    docker_images: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DOCKER_IMAGES))
    # Per-container writable-layer limit of the Docker provider.
    disk_limit_mb: int = DEFAULT_DISK_LIMIT_MB
    sweep_interval: timedelta = timedelta(seconds=30)
    # Which provider resources are ours: the reconciler only ever removes those carrying this label.
    deployment: str = "default"
    e2b: E2BSettings = field(default_factory=lambda: E2BSettings(api_key="", templates={}))
    node_env: str = ""
    # SANDBOX_LOG_FORMAT: "text" (readable) or "json" (one object per line).
    log_format: str = "text"
    egress: EgressSettings = field(default_factory=EgressSettings)
    # The gateway's side: where it forwards model calls, with which key, and its shared state directory.
    anthropic_base_url: str = DEFAULT_ANTHROPIC_BASE_URL
    anthropic_api_key: str = field(default="", repr=False)
    egress_state_dir: Path = DEFAULT_EGRESS_STATE_ROOT / "default"
    # SANDBOX_MAX_LIVE[_<KIND>], SANDBOX_CAPACITY_WAIT_MS, SANDBOX_WARM_POOL_<KIND>.
    capacity: Capacity = field(default_factory=lambda: _no_limits())
    # The key of the relay's webhook signatures (HMAC-SHA256); `sandboxctl relay` refuses to run without.
    webhook_secret: str = field(default="", repr=False)

    @property
    def s3_bucket(self) -> str | None:
        return self.s3.bucket if self.s3 else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate every variable; one ConfigError names all that are bad.

        A missing provider credential is not an error here (read-only commands work without one): the
        composition root refuses it before anything can be written. Docker under NODE_ENV=production
        is refused here, with ProviderRefused.
        """
        reader = _Reader(os.environ if environ is None else environ)
        provider = (reader.text("SANDBOX_PROVIDER") or "e2b").lower()
        if provider not in PROVIDERS:
            reader.bad(f"SANDBOX_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        data_dir = default_data_dir(reader.env)
        database_url = _database_url(reader, data_dir)
        idle = _idle_ms(reader)
        policy = Policy(
            idle_timeout=idle,
            retention=reader.millis("SANDBOX_SNAPSHOT_RETENTION_MS", 604_800_000),
            lease=reader.millis("SANDBOX_LEASE_MS", 600_000),
        )
        sweep_interval = reader.millis("SANDBOX_SWEEP_INTERVAL_MS", 30_000, MAX_SWEEP_INTERVAL_MS)
        disk_limit_mb = reader.integer(
            # 0 turns the limit off: it needs root on the Docker host (a loop-mounted disk per sandbox),
            # which a rootless or remote engine does not give.
            "SANDBOX_DISK_LIMIT_MB",
            DEFAULT_DISK_LIMIT_MB,
            MAX_DISK_LIMIT_MB,
            "megabytes",
            minimum=0,
        )
        deployment = reader.env.get("SANDBOX_DEPLOYMENT") or deployment_of(database_url)
        if not DEPLOYMENT_NAME.fullmatch(deployment):
            shown = deployment if len(deployment) <= 70 else deployment[:70] + "..."
            reader.bad(f"SANDBOX_DEPLOYMENT must be {DEPLOYMENT_RULE}, got {shown!r}")
        # Read once: the Docker egress point and the E2B gateway forward to the same model API.
        upstream_url = _anthropic_base_url(reader)
        api_key = reader.text("ANTHROPIC_API_KEY") or ""
        egress_state_dir = _egress_state_dir(reader, deployment)
        settings = cls(
            provider=provider,
            database_url=database_url,
            data_dir=data_dir,
            policy=policy,
            snapshot_dir=_snapshot_dir(reader, data_dir),
            s3=_s3_settings(reader),
            docker_images={
                kind: reader.text(name) or DEFAULT_DOCKER_IMAGES[kind]
                for kind, name in DOCKER_IMAGE_ENV.items()
            },
            disk_limit_mb=disk_limit_mb,
            sweep_interval=sweep_interval,
            deployment=deployment,
            e2b=_e2b_settings(reader, idle, deployment),
            node_env=reader.text("NODE_ENV") or "",
            log_format=_log_format(reader),
            egress=_egress_settings(reader, upstream_url, api_key, egress_state_dir),
            anthropic_base_url=upstream_url,
            anthropic_api_key=api_key,
            egress_state_dir=egress_state_dir,
            capacity=_capacity(reader),
            webhook_secret=reader.text("SANDBOX_WEBHOOK_SECRET") or "",
        )
        reader.raise_problems()
        if provider == "docker":
            refuse_production(settings.node_env)
        return settings

    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold, for scrubbing messages that might echo one."""
        values = [
            self.e2b.api_key,
            *self.e2b.sandbox_envs.values(),
            url_password(self.database_url),
            self.anthropic_api_key,
        ]
        if self.s3 is not None:
            values.append(self.s3.secret_key or "")
        values.append(self.webhook_secret)
        return tuple(v for v in values if v)

    def describe(self) -> dict[str, str]:
        """What `doctor` prints: never a secret, and a database URL without its password."""
        return {
            "provider": self.provider,
            "database": redact_url(self.database_url),
            "snapshots": (
                "kept by E2B (native pause)"
                if self.provider == "e2b"
                else f"s3://{self.s3_bucket}"
                if self.s3_bucket
                else str(self.snapshot_dir)
            ),
            "idle_timeout_ms": str(int(self.policy.idle_timeout.total_seconds() * 1000)),
            "snapshot_retention_ms": str(int(self.policy.retention.total_seconds() * 1000)),
            "deployment": self.deployment,
            "e2b_model_gateway": self.e2b.gateway_url or "off (E2B sandboxes hold ANTHROPIC_API_KEY)",
        }


MAX_LIVE_LIMIT = 1_000_000
MAX_WARM_POOL = 1000
DEFAULT_CAPACITY_WAIT_MS = 30_000


def kind_env(prefix: str, kind: str) -> str:
    """``SANDBOX_MAX_LIVE_DATA_APP`` for prefix ``SANDBOX_MAX_LIVE`` and kind ``data-app``."""
    return f"{prefix}_{kind.upper().replace('-', '_')}"


def _no_limits() -> Capacity:
    from sandbox_lifecycle.core.capacity import Capacity

    return Capacity()


def _capacity(reader: _Reader) -> Capacity:
    """SANDBOX_MAX_LIVE (unset: no limit), per-kind limits, the wait when full, the warm pool sizes."""
    from sandbox_lifecycle.core.capacity import Capacity

    def limit(name: str) -> int | None:
        if reader.text(name) is None:
            return None
        return reader.integer(name, 0, MAX_LIVE_LIMIT, "sandboxes")

    per_kind = {
        kind: n for kind in (DATA_APP, AI_WRITEBACK) if (n := limit(kind_env("SANDBOX_MAX_LIVE", kind)))
    }
    pools = {
        kind: reader.integer(kind_env("SANDBOX_WARM_POOL", kind), 0, MAX_WARM_POOL, "sandboxes", minimum=0)
        for kind in (DATA_APP, AI_WRITEBACK)
    }
    return Capacity(
        max_live=limit("SANDBOX_MAX_LIVE"),
        max_live_per_kind=per_kind,
        wait=timedelta(
            milliseconds=reader.integer(
                "SANDBOX_CAPACITY_WAIT_MS", DEFAULT_CAPACITY_WAIT_MS, MAX_TIMER_MS, "milliseconds", minimum=0
            )
        ),
        warm_pool={kind: n for kind, n in pools.items() if n},
    )


def refuse_production(node_env: str | None) -> None:
    """Raise ProviderRefused for the Docker provider under NODE_ENV=production."""
    if node_env == "production":
        raise ProviderRefused(
            "the Docker provider refuses NODE_ENV=production: the Docker socket is root-equivalent and "
            "a container is not an isolation boundary for untrusted, agent-written code; "
            "use SANDBOX_PROVIDER=e2b in production"
        )


def deployment_of(database_url: str) -> str:
    """A stable name for everything that shares one event log (and so may reap each other's orphans).

    Replicas configured with the same database get the same name; a staging and a production stack
    sharing one Docker engine or one E2B team get different ones. The password is not part of it.
    """
    import hashlib  # here: only a deployment named after its database needs it

    digest = hashlib.sha256(redact_url(database_url).encode()).hexdigest()
    return f"db-{digest[:12]}"


def url_password(url: str) -> str:
    _scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return ""
    creds = rest.rpartition("@")[0]
    return unquote(creds.split(":", 1)[1]) if ":" in creds else ""


def scrub(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """``text`` with every secret value replaced (longest first, so a prefix never leaves a tail)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
            quoted = re.sub(r"[^A-Za-z0-9_.~-]", lambda m: f"%{ord(m.group()):02X}", secret)
            if quoted != secret:
                text = text.replace(quoted, "***")
    return text


def environ_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets of an environment that may not parse as Settings (for the CLI's last-resort errors)."""
    values = [environ.get(name, "") for name in SECRET_ENV]
    # A multi-line secret (a PEM key) reaches a message joined onto one line or quoted with its "\n"
    # escaped, where the whole value no longer matches: each line is scrubbed on its own too.
    values += [line.strip() for v in values if "\n" in v for line in v.splitlines()]
    values.append(url_password(environ.get("SANDBOX_DATABASE_URL", "")))
    return tuple(v for v in values if v)


def first_line(text: str, limit: int = 400) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


LOG_FORMATS = ("text", "json")


def parse_log_format(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """SANDBOX_LOG_FORMAT as (format, problem); the CLI sets up logging with it before the other
    settings are parsed, so it is readable on its own. A bad value falls back to text."""
    raw = (environ.get("SANDBOX_LOG_FORMAT") or "").strip().lower()
    if not raw:
        return "text", None
    if raw not in LOG_FORMATS:
        return "text", f"SANDBOX_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {raw[:40]!r}"
    return raw, None


def _log_format(reader: _Reader) -> str:
    value, problem = parse_log_format(reader.env)
    if problem:
        reader.bad(problem)
    return value
