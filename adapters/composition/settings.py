"""The settings read from the environment: the product's interface. Names are fixed; values are validated.

:meth:`Settings.from_env` parses every variable and raises one ``ConfigError`` naming every bad variable
and what would be valid. The common ones are read here (with the reader and the shared values of
``composition.environ``); each registered provider parses its own in its folder
(``providers/<name>/settings.py``, through its registry entry), with the same reader and whichever provider
is chosen, so a bad value of any of them is named at once. The adapters receive typed values
(``E2BSettings``, ``S3Settings``) and do not parse the environment themselves. Elsewhere the environment
is read only where a library's own convention is kept: the providers' SDKs read their own variables
(``DOCKER_HOST`` and the TLS ones, which the Docker provider's stdlib engine client reads as
``docker.from_env()`` does; ``E2B_DEBUG`` and the like), a ``DockerProvider`` built without an
``environ`` checks ``NODE_ENV`` of ``os.environ``, and ``events/migrations/env.py`` reads
``SANDBOX_DATABASE_URL`` when alembic runs without a URL.

Hand-written rather than on pydantic-settings: importing pydantic-settings costs ~0.3 s of CPU on the
machines we measured, which every `sandboxctl` call would pay; this module costs a few milliseconds.
Secrets (API keys, the S3 secret, the database password) are kept out of every repr and message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from sandbox_lifecycle.adapters.composition.environ import (
    DEFAULT_ANTHROPIC_BASE_URL,
    DEFAULT_EGRESS_STATE_ROOT,
    DEPLOYMENT_NAME,
    DEPLOYMENT_RULE,
    MAX_TIMER_MS,
    EnvReader,
    shared_values,
)
from sandbox_lifecycle.adapters.composition.scrubbing import url_password
from sandbox_lifecycle.adapters.providers import registry
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.events.names import redact_url
from sandbox_lifecycle.events.values import FieldValues, value_class

if TYPE_CHECKING:
    # Loaded when the limits are read: the capacity module brings the transition table with it.
    from sandbox_lifecycle.core.capacity import Capacity

# The provider when SANDBOX_PROVIDER is unset: the one fit for production.
DEFAULT_PROVIDER = "e2b"
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
_SUPPORTED_DATABASES = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
MAX_SWEEP_INTERVAL_MS = 24 * 3600 * 1000


@value_class
class S3Settings(FieldValues):
    """Where Docker snapshots go when ``S3_BUCKET`` is set."""

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)


def _s3_settings(reader: EnvReader) -> S3Settings | None:
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


def _database_url(reader: EnvReader, data_dir: Path) -> str:
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


def _snapshot_dir(reader: EnvReader, data_dir: Path) -> Path:
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
    sweep_interval: timedelta = timedelta(seconds=30)
    # Which provider resources are ours: the reconciler only ever removes those carrying this label.
    deployment: str = "default"
    # SANDBOX_LOG_FORMAT: "text" (readable) or "json" (one object per line).
    log_format: str = "text"
    # The gateway's side: where it forwards model calls, with which key, and its shared state directory.
    anthropic_base_url: str = DEFAULT_ANTHROPIC_BASE_URL
    anthropic_api_key: str = field(default="", repr=False)
    egress_state_dir: Path = DEFAULT_EGRESS_STATE_ROOT / "default"
    # SANDBOX_MAX_LIVE[_<KIND>], SANDBOX_CAPACITY_WAIT_MS, SANDBOX_WARM_POOL_<KIND>.
    capacity: Capacity = field(default_factory=lambda: _no_limits())
    # The key of the relay's webhook signatures (HMAC-SHA256); `sandboxctl relay` refuses to run without.
    webhook_secret: str = field(default="", repr=False)
    # Every registered provider's own settings, by name (``providers/<name>/settings.py``).
    provider_settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def s3_bucket(self) -> str | None:
        return self.s3.bucket if self.s3 else None

    @property
    def chosen(self) -> Any:
        """The settings of the provider in use."""
        return self.provider_settings[self.provider]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate every variable; one ConfigError names all that are bad.

        A missing provider credential is not an error here (read-only commands work without one): the
        composition root refuses it before anything can be written. What a provider refuses outright
        (Docker under NODE_ENV=production) is refused here, with ProviderRefused.
        """
        reader = EnvReader(os.environ if environ is None else environ)
        providers = registry.registered()
        provider = (reader.text("SANDBOX_PROVIDER") or DEFAULT_PROVIDER).lower()
        if provider not in providers:
            reader.bad(registry.unknown_provider(provider))
        data_dir = default_data_dir(reader.env)
        database_url = _database_url(reader, data_dir)
        deployment = reader.env.get("SANDBOX_DEPLOYMENT") or deployment_of(database_url)
        if not DEPLOYMENT_NAME.fullmatch(deployment):
            shown = deployment if len(deployment) <= 70 else deployment[:70] + "..."
            reader.bad(f"SANDBOX_DEPLOYMENT must be {DEPLOYMENT_RULE}, got {shown!r}")
        # Read once: the Docker egress point and the E2B gateway forward to the same model API.
        shared = shared_values(reader, deployment)
        policy = Policy(
            idle_timeout=shared.idle_timeout,
            retention=reader.millis("SANDBOX_SNAPSHOT_RETENTION_MS", 604_800_000),
            lease=reader.millis("SANDBOX_LEASE_MS", 600_000),
            max_lifetime=_max_lifetime(reader),
            warning_lead=timedelta(
                milliseconds=reader.integer(
                    "SANDBOX_WARNING_LEAD_MS",
                    DEFAULT_WARNING_LEAD_MS,
                    MAX_TIMER_MS,
                    "milliseconds",
                    minimum=0,
                )
            ),
        )
        settings = cls(
            provider=provider,
            database_url=database_url,
            data_dir=data_dir,
            policy=policy,
            snapshot_dir=_snapshot_dir(reader, data_dir),
            s3=_s3_settings(reader),
            sweep_interval=reader.millis("SANDBOX_SWEEP_INTERVAL_MS", 30_000, MAX_SWEEP_INTERVAL_MS),
            deployment=deployment,
            log_format=_log_format(reader),
            anthropic_base_url=shared.anthropic_base_url,
            anthropic_api_key=shared.anthropic_api_key,
            egress_state_dir=shared.egress_state_dir,
            capacity=_capacity(reader),
            webhook_secret=reader.text("SANDBOX_WEBHOOK_SECRET") or "",
            provider_settings={name: entry.parse(reader, shared) for name, entry in providers.items()},
        )
        reader.raise_problems()
        providers[provider].refuse(settings.chosen)
        return settings

    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold, for scrubbing messages that might echo one."""
        values = [url_password(self.database_url), self.anthropic_api_key]
        for name, entry in registry.registered().items():
            if name in self.provider_settings:
                values += entry.secrets(self.provider_settings[name])
        if self.s3 is not None:
            values.append(self.s3.secret_key or "")
        values.append(self.webhook_secret)
        return tuple(v for v in values if v)

    def describe(self) -> dict[str, str]:
        """What `doctor` prints: never a secret, and a database URL without its password."""
        entry = registry.entry(self.provider)
        return {
            "provider": self.provider,
            "database": redact_url(self.database_url),
            "snapshots": (
                entry.native_snapshots
                or (f"s3://{self.s3_bucket}" if self.s3_bucket else str(self.snapshot_dir))
            ),
            "idle_timeout_ms": str(int(self.policy.idle_timeout.total_seconds() * 1000)),
            "snapshot_retention_ms": str(int(self.policy.retention.total_seconds() * 1000)),
            "max_lifetime_ms": _ms_or_unset(self.policy.max_lifetime),
            "warning_lead_ms": _ms_or_unset(self.policy.warning_lead),
            "deployment": self.deployment,
            **entry.describe(self.chosen),
        }


# How long before a timer acts its warning (ExpiryWarned) is recorded: Vercel's ``expiring``, a minute.
DEFAULT_WARNING_LEAD_MS = 60_000


def _ms_or_unset(delta: timedelta | None) -> str:
    return "unset" if delta is None else str(int(delta.total_seconds() * 1000))


def _max_lifetime(reader: EnvReader) -> timedelta | None:
    """SANDBOX_MAX_LIFETIME_MS: unset (or empty) is no limit; otherwise a whole number of ms, >= 1."""
    if reader.text("SANDBOX_MAX_LIFETIME_MS") is None:
        return None
    return reader.millis("SANDBOX_MAX_LIFETIME_MS", 1)


MAX_LIVE_LIMIT = 1_000_000
MAX_WARM_POOL = 1000
DEFAULT_CAPACITY_WAIT_MS = 30_000


def kind_env(prefix: str, kind: str) -> str:
    """``SANDBOX_MAX_LIVE_DATA_APP`` for prefix ``SANDBOX_MAX_LIVE`` and kind ``data-app``."""
    return f"{prefix}_{kind.upper().replace('-', '_')}"


def _no_limits() -> Capacity:
    # why here: `ls` reads settings but never the capacity rules (tests/**/cli/test_imports.py)
    from sandbox_lifecycle.core.capacity import Capacity

    return Capacity()


def _capacity(reader: EnvReader) -> Capacity:
    """SANDBOX_MAX_LIVE (unset: no limit), per-kind limits, the wait when full, the warm pool sizes."""
    # why here: `ls` reads settings but never the capacity rules (tests/**/cli/test_imports.py)
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


def deployment_of(database_url: str) -> str:
    """A stable name for everything that shares one event log (and so may reap each other's orphans).

    Replicas configured with the same database get the same name; a staging and a production stack
    sharing one Docker engine or one E2B team get different ones. The password is not part of it.
    """
    import hashlib  # here: only a deployment named after its database needs it

    digest = hashlib.sha256(redact_url(database_url).encode()).hexdigest()
    return f"db-{digest[:12]}"


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


def _log_format(reader: EnvReader) -> str:
    value, problem = parse_log_format(reader.env)
    if problem:
        reader.bad(problem)
    return value
