"""Settings' bounds and defaults, exactly at their edges (issue 20: gaps targeted mutation testing found)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.composition.scrubbing import first_line, scrub
from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.core.errors import ConfigError


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
        "SANDBOX_MAX_LIFETIME_MS",
        "SANDBOX_WARNING_LEAD_MS",
    ],
)
def test_a_timer_exactly_at_the_maximum_is_accepted(name: str) -> None:
    # The bound is inclusive: ten years is allowed, one millisecond more is not.
    Settings.from_env({name: "315360000000"})
    assert name in problems({name: "315360000001"})


def test_a_sweep_interval_of_exactly_a_day_is_accepted() -> None:
    assert Settings.from_env({"SANDBOX_SWEEP_INTERVAL_MS": "86400000"}).sweep_interval == timedelta(days=1)
    assert "86400000" in problems({"SANDBOX_SWEEP_INTERVAL_MS": "86400001"})


def test_the_default_lease_is_the_documented_ten_minutes(tmp_path: Path) -> None:
    # docs/operations.md and the README: SANDBOX_LEASE_MS defaults to 600000.
    assert Settings.from_env({"HOME": str(tmp_path)}).policy.lease == timedelta(milliseconds=600_000)


def test_max_lifetime_is_unset_by_default_and_the_warning_lead_a_minute(tmp_path: Path) -> None:
    # docs/operations.md: SANDBOX_MAX_LIFETIME_MS unset (no limit), SANDBOX_WARNING_LEAD_MS 60000.
    policy = Settings.from_env({"HOME": str(tmp_path)}).policy
    assert (policy.max_lifetime, policy.warning_lead) == (None, timedelta(minutes=1))
    assert Settings.from_env({"SANDBOX_MAX_LIFETIME_MS": " "}).policy.max_lifetime is None


@given(ms=st.integers(1, 315360000000))
def test_a_max_lifetime_in_range_is_taken_to_the_millisecond(ms: int) -> None:
    assert Settings.from_env({"SANDBOX_MAX_LIFETIME_MS": str(ms)}).policy.max_lifetime == timedelta(
        milliseconds=ms
    )


@pytest.mark.parametrize("value", ["0", "-5", "1h", "1.5", "+7"])
def test_a_max_lifetime_of_zero_or_not_a_whole_number_is_refused(value: str) -> None:
    assert "SANDBOX_MAX_LIFETIME_MS must be a whole number of milliseconds from 1" in problems(
        {"SANDBOX_MAX_LIFETIME_MS": value}
    )


def test_a_warning_lead_of_zero_turns_warnings_off_and_a_negative_one_is_refused() -> None:
    assert Settings.from_env({"SANDBOX_WARNING_LEAD_MS": "0"}).policy.warning_lead == timedelta(0)
    assert "SANDBOX_WARNING_LEAD_MS must be a whole number of milliseconds from 0" in problems(
        {"SANDBOX_WARNING_LEAD_MS": "-1"}
    )


@pytest.mark.parametrize(
    "url", ["http://localhost.example.com", "http://127.0.0.1.example.com/v1", "http://api.example.com"]
)
def test_a_clear_text_model_url_to_a_host_that_only_looks_local_is_refused(url: str) -> None:
    assert "clear text" in problems({"ANTHROPIC_BASE_URL": url})


@pytest.mark.parametrize("url", ["http://localhost:8080", "http://127.0.0.1:9/", "http://[::1]:8080"])
def test_a_clear_text_model_url_to_loopback_is_accepted(url: str) -> None:
    assert Settings.from_env({"ANTHROPIC_BASE_URL": url}).anthropic_base_url == url.rstrip("/")


def test_a_slash_28_network_pool_is_accepted() -> None:
    # The smallest pool the bridge allocator can carve per-sandbox networks from.
    chosen = Settings.from_env({"SANDBOX_DOCKER_NETWORK_POOL": "10.9.0.0/28"})
    assert chosen.provider_settings["docker"].egress.network_pool == "10.9.0.0/28"


def test_the_e2b_transfer_bounds_are_the_documented_ones() -> None:
    # README: an exec's output is bounded per stream by the provider's bound, 1 MiB by default; a file
    # read through the E2B API by 64 MiB (past it, a clear error rather than an unbounded download).
    e2b = Settings.from_env({}).provider_settings["e2b"]
    assert e2b.max_output_bytes == 1024**2
    assert e2b.max_file_bytes == 64 * 1024**2


def test_the_disk_limit_is_bounded_at_16_tib_inclusive() -> None:
    top = 16 * 1024 * 1024  # MB
    assert (
        Settings.from_env({"SANDBOX_DISK_LIMIT_MB": str(top)}).provider_settings["docker"].disk_limit_mb
        == top
    )
    assert f"0 to {top}" in problems({"SANDBOX_DISK_LIMIT_MB": str(top + 1)})


def test_only_a_plain_postgresql_url_gets_the_psycopg2_hint() -> None:
    assert "psycopg2" in problems({"SANDBOX_DATABASE_URL": "postgresql://u@db/x"})
    assert "psycopg2" in problems({"SANDBOX_DATABASE_URL": "postgres://u@db/x"})
    assert "psycopg2" not in problems({"SANDBOX_DATABASE_URL": "mysql://u@db/x"})


def test_a_long_bad_value_is_shown_cut_at_40_characters() -> None:
    # Echoed so the operator recognises it, but bounded: a pasted blob must not flood the error.
    assert repr("x" * 40) in problems({"SANDBOX_LEASE_MS": "x" * 40})
    message = problems({"SANDBOX_LEASE_MS": "x" * 41})
    assert repr("x" * 40 + "...") in message and "x" * 41 not in message


def test_scrub_replaces_every_secret_plain_and_url_quoted() -> None:
    assert scrub("key hunter22 and again hunter22", ["hunter22"]) == "key *** and again ***"
    assert scrub("url u:p%40ssw0rd@db", ["p@ssw0rd"]) == "url u:***@db"
    assert scrub("short abc stays", ["abc"]) == "short abc stays"  # too short to be a secret worth it


def test_first_line_is_the_first_non_blank_line_bounded() -> None:
    assert first_line("\n  boom: the first\nsecond\n") == "boom: the first"
    assert first_line("   ") == ""
    assert first_line("y" * 401) == "y" * 400 + "..."
