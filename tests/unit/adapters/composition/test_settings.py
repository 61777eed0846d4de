from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.core.errors import ConfigError, StoreError
from sandbox_lifecycle.events.names import redact_url


def test_defaults_are_the_documented_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings.from_env({"HOME": str(tmp_path)})
    assert s.provider == "e2b"
    assert s.policy.idle_timeout == timedelta(minutes=30)
    assert s.policy.retention == timedelta(days=7)
    assert s.database_url == f"sqlite:///{tmp_path}/.local/share/sandbox-lifecycle/sandbox.db"
    assert s.snapshot_dir == tmp_path / ".local/share/sandbox-lifecycle/snapshots"
    assert s.provider_settings["docker"].images == {
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
            "S3_ACCESS_KEY": "AKIA-visible-id",
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


# --- issue F / G8: every value is checked once, before anything starts --------------------------------


def problems(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    return str(raised.value)


@pytest.mark.parametrize(
    "name",
    [
        "SANDBOX_IDLE_TIMEOUT_MS",
        "SANDBOX_SNAPSHOT_RETENTION_MS",
        "SANDBOX_LEASE_MS",
        "E2B_SANDBOX_TIMEOUT_MS",
    ],
)
def test_a_timer_too_large_is_a_config_error_naming_the_bound(name: str) -> None:
    message = problems({name: "99999999999999999999"})
    assert name in message and "315360000000" in message  # ten years, in ms


def test_sweep_interval_is_bounded() -> None:
    assert "86400000" in problems({"SANDBOX_SWEEP_INTERVAL_MS": "100000000000"})


@pytest.mark.parametrize("value", ["+5", "1_000", "١٢", " 7 7"])
def test_timer_values_are_plain_ascii_digits(value: str) -> None:
    assert "SANDBOX_LEASE_MS" in problems({"SANDBOX_LEASE_MS": value})


def test_every_bad_value_is_named_in_one_error() -> None:
    message = problems(
        {"SANDBOX_IDLE_TIMEOUT_MS": "soon", "SANDBOX_PROVIDER": "podman", "SANDBOX_DISK_LIMIT_MB": "-1"}
    )
    for name in ("SANDBOX_IDLE_TIMEOUT_MS", "SANDBOX_PROVIDER", "SANDBOX_DISK_LIMIT_MB"):
        assert name in message
    assert "\n" not in message


def test_disk_limit_default_and_value() -> None:
    assert Settings.from_env({}).provider_settings["docker"].disk_limit_mb == 10240
    assert (
        Settings.from_env({"SANDBOX_DISK_LIMIT_MB": "2048"}).provider_settings["docker"].disk_limit_mb == 2048
    )
    # 0 is off (a rootless or remote engine cannot loop-mount a disk per sandbox).
    assert Settings.from_env({"SANDBOX_DISK_LIMIT_MB": "0"}).provider_settings["docker"].disk_limit_mb == 0
    for bad in ("-1", "lots", "1.5", "16777217"):
        assert "SANDBOX_DISK_LIMIT_MB" in problems({"SANDBOX_DISK_LIMIT_MB": bad})


@pytest.mark.parametrize("name", ["../evil", "a/b", "-x", ".hidden", "a b", "x" * 64, "naïve", "a\nb"])
def test_unsafe_deployment_names_are_refused(name: str) -> None:
    message = problems({"SANDBOX_DEPLOYMENT": name})
    assert "SANDBOX_DEPLOYMENT" in message and "1-63" in message


def test_deployment_names_that_are_labels_are_kept() -> None:
    assert Settings.from_env({"SANDBOX_DEPLOYMENT": "staging-eu.1_a"}).deployment == "staging-eu.1_a"
    assert Settings.from_env({"SANDBOX_DEPLOYMENT": ""}).deployment.startswith("db-")


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app@db/sbx",
        "postgresql://app@db/sbx",  # psycopg2, which is not what we install
        "postgres://app@db/sbx",
        "not a url",
        "sqlite:",
    ],
)
def test_unsupported_database_urls_name_the_supported_drivers(url: str) -> None:
    message = problems({"SANDBOX_DATABASE_URL": url})
    assert "SANDBOX_DATABASE_URL" in message
    assert "sqlite:///" in message and "postgresql+psycopg://" in message


def test_a_malformed_database_url_never_shows_its_password() -> None:
    message = problems({"SANDBOX_DATABASE_URL": "postgresql+psycopg://app:hunter2@db:port/sbx"})
    assert "SANDBOX_DATABASE_URL" in message and "hunter2" not in message


def test_a_sqlite_file_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "deeper"
    message = problems({"SANDBOX_DATABASE_URL": f"sqlite:///{missing}/log.db"})
    assert "SANDBOX_DATABASE_URL" in message and str(missing) in message
    assert not missing.exists()
    # An existing directory is fine; the file itself is created on first use.
    ok = Settings.from_env({"SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path}/log.db"})
    assert ok.database_url == f"sqlite:///{tmp_path}/log.db"


def test_the_embedded_default_may_live_in_a_data_dir_not_made_yet(tmp_path: Path) -> None:
    data = tmp_path / "not" / "yet"
    s = Settings.from_env({"SANDBOX_DATA_DIR": str(data)})
    assert s.database_url == f"sqlite:///{data}/sandbox.db"
    # ...and so may an explicit URL naming a file directly in the data dir.
    Settings.from_env({"SANDBOX_DATA_DIR": str(data), "SANDBOX_DATABASE_URL": f"sqlite:///{data}/other.db"})


def test_an_explicit_snapshot_dir_needs_its_parent(tmp_path: Path) -> None:
    message = problems({"SANDBOX_PROVIDER": "docker", "SANDBOX_SNAPSHOT_DIR": str(tmp_path / "a" / "b")})
    assert "SANDBOX_SNAPSHOT_DIR" in message
    s = Settings.from_env({"SANDBOX_PROVIDER": "docker", "SANDBOX_SNAPSHOT_DIR": str(tmp_path / "a")})
    assert s.snapshot_dir == tmp_path / "a"


def test_provider_settings_are_parsed_with_the_rest() -> None:
    s = Settings.from_env(
        {
            "E2B_API_KEY": "k-123",
            "E2B_TEMPLATE_NAME": "acme/app",
            "E2B_TEMPLATE_TAG": "v7",
            "SANDBOX_EGRESS_ALLOW_DATA_APP": " pkgs.test, ,files.pkgs.test ",
            "SANDBOX_IDLE_TIMEOUT_MS": "60000",
            "S3_BUCKET": "snaps",
            "S3_ENDPOINT": "http://127.0.0.1:9000",
        }
    )
    assert s.provider_settings["e2b"].templates["data-app"] == "acme/app:v7"
    assert s.provider_settings["e2b"].egress_allow["data-app"] == ("pkgs.test", "files.pkgs.test")
    assert s.provider_settings["e2b"].sandbox_timeout == 60 + 600  # behind our idle timer
    assert s.s3 is not None and (s.s3.bucket, s.s3.endpoint_url) == ("snaps", "http://127.0.0.1:9000")
    assert s.s3_bucket == "snaps"


def test_s3_keys_come_in_pairs_and_are_never_echoed() -> None:
    message = problems({"S3_BUCKET": "b", "S3_SECRET_KEY": "s3cr3t-value"})
    assert "S3_ACCESS_KEY" in message and "s3cr3t-value" not in message


def test_a_refused_combination_is_refused_before_anything_is_built() -> None:
    from sandbox_lifecycle.core.errors import ProviderRefused

    with pytest.raises(ProviderRefused, match="NODE_ENV=production"):
        Settings.from_env({"SANDBOX_PROVIDER": "docker", "NODE_ENV": "production"})
    assert Settings.from_env({"SANDBOX_PROVIDER": "e2b", "NODE_ENV": "production"}).provider == "e2b"


def test_no_secret_in_any_repr_or_description() -> None:
    env = {
        "SANDBOX_DATABASE_URL": "postgresql+psycopg://app:hunter2@db:5432/sbx",
        "S3_BUCKET": "snaps",
        "S3_ACCESS_KEY": "AKIA-visible-id",
        "S3_SECRET_KEY": "s3cr3t",
        "E2B_API_KEY": "e2b_key_123",
        "ANTHROPIC_API_KEY": "sk-ant-xyz",
    }
    s = Settings.from_env(env)
    shown = repr(s) + str(s.describe()) + repr(s.provider_settings["e2b"]) + repr(s.s3) + str(s)
    for secret in ("hunter2", "s3cr3t", "e2b_key_123", "sk-ant-xyz"):
        assert secret not in shown
    assert s.provider_settings["e2b"].api_key == "e2b_key_123" and s.provider_settings[
        "e2b"
    ].sandbox_envs == {"ANTHROPIC_API_KEY": "sk-ant-xyz"}
    assert set(s.secrets()) >= {"hunter2", "s3cr3t", "e2b_key_123", "sk-ant-xyz"}


# --- the composition root: nothing is written before the provider could be built -----------------------


def log_bytes(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob("sandbox.db*"))}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An embedded log with one sandbox in it, written by a service that had a working provider."""
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service
    from tests.support.fakes import FakeProvider

    data = tmp_path / "data"
    service = build_service({"SANDBOX_DATA_DIR": str(data)}, provider=FakeProvider())
    service.create("data-app", "c-1")
    service.store.close()
    return data


def test_a_missing_credential_fails_before_the_log_is_touched(data_dir: Path) -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    before = log_bytes(data_dir)
    with pytest.raises(ConfigError, match="E2B_API_KEY"):
        build_service({"SANDBOX_DATA_DIR": str(data_dir), "SANDBOX_PROVIDER": "e2b"})
    assert log_bytes(data_dir) == before


def test_reading_needs_no_credential_and_a_write_through_it_still_refuses(data_dir: Path) -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    service = build_service({"SANDBOX_DATA_DIR": str(data_dir)}, require_provider=False)
    (row,) = service.list()
    assert row.conversation_id == "c-1"
    with pytest.raises(ConfigError, match="E2B_API_KEY"):
        service.provider.list_instances()
    count = len(service.store.read_stream(row.id))
    with pytest.raises(ConfigError, match="E2B_API_KEY"):
        service.create("data-app", "c-2")
    with pytest.raises(ConfigError, match="E2B_API_KEY"):
        service.destroy(row.id)
    assert len(service.store.read_stream(row.id)) == count
    assert [r.id for r in service.list()] == [row.id]


def test_an_unsafe_deployment_fails_before_the_log_is_touched(data_dir: Path) -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    before = log_bytes(data_dir)
    env = {"SANDBOX_DATA_DIR": str(data_dir), "SANDBOX_PROVIDER": "docker", "SANDBOX_DEPLOYMENT": "../evil"}
    with pytest.raises(ConfigError, match="SANDBOX_DEPLOYMENT"):
        build_service(env)
    with pytest.raises(ConfigError, match="SANDBOX_DEPLOYMENT"):
        build_service(env, require_provider=False)
    assert log_bytes(data_dir) == before


@pytest.mark.parametrize(
    ("module", "extra", "env"),
    [
        ("docker", "docker", {"SANDBOX_PROVIDER": "docker"}),
        ("e2b", "e2b", {"SANDBOX_PROVIDER": "e2b", "E2B_API_KEY": "k"}),
        ("boto3", "s3", {"SANDBOX_PROVIDER": "docker", "S3_BUCKET": "snaps"}),
    ],
)
def test_a_missing_extra_is_named(
    module: str, extra: str, env: dict[str, str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    monkeypatch.setitem(sys.modules, module, None)
    before = log_bytes(data_dir)
    with pytest.raises(ConfigError, match=re.escape(f"pip install 'sandbox-lifecycle[{extra}]'")):
        build_service({"SANDBOX_DATA_DIR": str(data_dir), **env})
    assert log_bytes(data_dir) == before


def test_a_postgres_url_without_its_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service
    from tests.support.fakes import FakeProvider

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'sandbox-lifecycle[postgres]'")):
        build_service(
            {"SANDBOX_DATABASE_URL": "postgresql+psycopg://app:pw@127.0.0.1:1/sbx"}, provider=FakeProvider()
        )


def test_an_unreachable_database_is_one_error_naming_its_host_not_its_password() -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service
    from tests.support.fakes import FakeProvider

    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    url = "postgresql+psycopg://app:hunter2-pw@127.0.0.1:1/sbx"
    with pytest.raises(StoreError) as raised:
        build_service({"SANDBOX_DATABASE_URL": url}, provider=FakeProvider())
    message = str(raised.value)
    assert "127.0.0.1:1" in message and "hunter2-pw" not in message and "\n" not in message


def test_the_docker_provider_gets_the_disk_limit(tmp_path: Path) -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    env = {"SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_PROVIDER": "docker", "SANDBOX_DISK_LIMIT_MB": "2048"}
    service = build_service(env)
    assert service.provider.disk_limit_mb == 2048  # type: ignore[attr-defined]


def test_the_default_allow_lists_are_valid_rules() -> None:
    # Settings check the allow-lists only when the environment changes them: the defaults must parse.
    from sandbox_lifecycle.adapters.composition.environ import DEFAULT_EGRESS_ALLOW
    from sandbox_lifecycle.adapters.egress.policy import parse_rules

    for entries in DEFAULT_EGRESS_ALLOW.values():
        parse_rules(entries)


def test_a_bad_allow_list_or_pin_is_still_named() -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"SANDBOX_EGRESS_ALLOW_DATA_APP": "a..b", "SANDBOX_EGRESS_RESOLVE": "nonsense"})
    assert "SANDBOX_EGRESS_ALLOW_DATA_APP" in str(e.value) and "SANDBOX_EGRESS_RESOLVE" in str(e.value)


def test_template_tags_default_to_the_package_version() -> None:
    from importlib.metadata import version

    release = version("sandbox-lifecycle")
    s = Settings.from_env({"E2B_TEMPLATE_TAG": "v7"})
    assert s.provider_settings["e2b"].templates["data-app"] == "lightdash/lightdash-data-app:v7"
    assert (
        s.provider_settings["e2b"].templates["ai-writeback"] == f"lightdash/lightdash-ai-writeback:{release}"
    )
    assert dict(s.provider_settings["e2b"].templates) == {
        "data-app": "lightdash/lightdash-data-app:v7",
        "ai-writeback": f"lightdash/lightdash-ai-writeback:{release}",
    }


def test_the_default_network_pool_is_valid_and_a_bad_one_is_named() -> None:
    from sandbox_lifecycle.adapters.providers.docker.settings import DEFAULT_NETWORK_POOL, network_pool_ok

    assert network_pool_ok(DEFAULT_NETWORK_POOL)
    for bad in ("10.0.0.0/29", "fd00::/64", "nonsense"):
        with pytest.raises(ConfigError, match="SANDBOX_DOCKER_NETWORK_POOL"):
            Settings.from_env({"SANDBOX_DOCKER_NETWORK_POOL": bad})
    chosen = Settings.from_env({"SANDBOX_DOCKER_NETWORK_POOL": "10.9.0.0/24"})
    assert chosen.provider_settings["docker"].egress.network_pool == "10.9.0.0/24"


def test_piece_cache_and_grace_defaults_and_values() -> None:
    pieces = Settings.from_env({}).provider_settings["docker"].pieces
    assert (pieces.cache_mb, pieces.grace_ms) == (1024, 3_600_000)
    env = {"SANDBOX_SNAPSHOT_CACHE_MB": "0", "SANDBOX_SNAPSHOT_PIECE_GRACE_MS": "60000"}
    pieces = Settings.from_env(env).provider_settings["docker"].pieces
    assert (pieces.cache_mb, pieces.grace_ms) == (0, 60_000)
    for name in ("SANDBOX_SNAPSHOT_CACHE_MB", "SANDBOX_SNAPSHOT_PIECE_GRACE_MS"):
        assert name in problems({name: "-1"})
