from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_lifecycle.adapters.settings import Settings, redact_url
from sandbox_lifecycle.core.errors import ConfigError


def test_defaults_are_the_documented_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings.from_env({"HOME": str(tmp_path)})
    assert s.provider == "e2b"
    assert s.policy.idle_timeout == timedelta(minutes=30)
    assert s.policy.retention == timedelta(days=7)
    assert s.database_url == f"sqlite:///{tmp_path}/.local/share/sandbox-lifecycle/sandbox.db"
    assert s.snapshot_dir == tmp_path / ".local/share/sandbox-lifecycle/snapshots"
    assert s.docker_images == {
        "data-app": "lightdash-sandbox:local",
        "ai-writeback": "lightdash-ai-writeback:local",
    }
    assert s.s3_bucket is None


@pytest.mark.parametrize("name", ["SANDBOX_IDLE_TIMEOUT_MS", "SANDBOX_SNAPSHOT_RETENTION_MS"])
@pytest.mark.parametrize("value", ["0", "-5", "soon", "1.5"])
def test_bad_timer_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_timer_values_are_read() -> None:
    s = Settings.from_env({"SANDBOX_IDLE_TIMEOUT_MS": "1500", "SANDBOX_SNAPSHOT_RETENTION_MS": "60000"})
    assert s.policy.idle_timeout == timedelta(milliseconds=1500)
    assert s.policy.retention == timedelta(minutes=1)


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ConfigError, match="SANDBOX_PROVIDER"):
        Settings.from_env({"SANDBOX_PROVIDER": "podman"})


def test_describe_never_shows_secrets() -> None:
    s = Settings.from_env(
        {
            "SANDBOX_DATABASE_URL": "postgresql+psycopg://app:hunter2@db:5432/sbx",
            "S3_BUCKET": "snaps",
            "S3_SECRET_KEY": "s3cr3t",
            "E2B_API_KEY": "e2b_key_123",
            "ANTHROPIC_API_KEY": "sk-ant-xyz",
        }
    )
    shown = repr(s) + str(s.describe())
    for secret in ("hunter2", "s3cr3t", "e2b_key_123", "sk-ant-xyz"):
        assert secret not in shown
    assert (
        redact_url("postgresql+psycopg://app:hunter2@db:5432/sbx")
        == "postgresql+psycopg://app:***@db:5432/sbx"
    )
