"""Settings read from the environment: the product's interface. Names are fixed; values are validated."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.core.projection import Policy

PROVIDERS = ("e2b", "docker")


def _positive_ms(environ: Mapping[str, str], name: str, default: int) -> timedelta:
    raw = environ.get(name, "").strip()
    if not raw:
        return timedelta(milliseconds=default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer number of milliseconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer number of milliseconds, got {raw!r}")
    return timedelta(milliseconds=value)


def default_data_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("SANDBOX_DATA_DIR"):
        return Path(environ["SANDBOX_DATA_DIR"])
    base = environ.get("XDG_DATA_HOME") or os.path.join(environ.get("HOME", "/root"), ".local", "share")
    return Path(base) / "sandbox-lifecycle"


@dataclass(frozen=True)
class Settings:
    provider: str
    # May hold a password: kept out of repr (and so out of logs and tracebacks).
    database_url: str = field(repr=False)
    data_dir: Path
    policy: Policy
    snapshot_dir: Path
    s3_bucket: str | None
    docker_images: dict[str, str] = field(default_factory=dict)
    sweep_interval: timedelta = timedelta(seconds=30)
    # Which provider resources are ours: the reconciler only ever removes those carrying this label.
    deployment: str = "default"
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        provider = (env.get("SANDBOX_PROVIDER") or "e2b").strip().lower()
        if provider not in PROVIDERS:
            raise ConfigError(f"SANDBOX_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        data_dir = default_data_dir(env)
        database_url = env.get("SANDBOX_DATABASE_URL") or f"sqlite:///{data_dir / 'sandbox.db'}"
        policy = Policy(
            idle_timeout=_positive_ms(env, "SANDBOX_IDLE_TIMEOUT_MS", 1_800_000),
            retention=_positive_ms(env, "SANDBOX_SNAPSHOT_RETENTION_MS", 604_800_000),
            lease=_positive_ms(env, "SANDBOX_LEASE_MS", 600_000),
        )
        return cls(
            provider=provider,
            database_url=database_url,
            data_dir=data_dir,
            policy=policy,
            snapshot_dir=Path(env.get("SANDBOX_SNAPSHOT_DIR") or data_dir / "snapshots"),
            s3_bucket=env.get("S3_BUCKET") or None,
            docker_images={
                DATA_APP: env.get("SANDBOX_DOCKER_IMAGE") or "lightdash-sandbox:local",
                AI_WRITEBACK: env.get("SANDBOX_AI_WRITEBACK_DOCKER_IMAGE") or "lightdash-ai-writeback:local",
            },
            sweep_interval=_positive_ms(env, "SANDBOX_SWEEP_INTERVAL_MS", 30_000),
            deployment=env.get("SANDBOX_DEPLOYMENT") or deployment_of(database_url),
            environ=env,
        )

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
        }


def deployment_of(database_url: str) -> str:
    """A stable name for everything that shares one event log (and so may reap each other's orphans).

    Replicas configured with the same database get the same name; a staging and a production stack
    sharing one Docker engine or one E2B team get different ones. The password is not part of it.
    """
    digest = hashlib.sha256(redact_url(database_url).encode()).hexdigest()
    return f"db-{digest[:12]}"


def redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
