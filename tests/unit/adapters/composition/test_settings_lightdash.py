"""The Lightdash host joins every kind's egress allow-list; `doctor`'s description of the snapshots.

Each test pins a behaviour a one-line mutant of settings.py changed unnoticed (docs/testing.md)."""

from __future__ import annotations

from sandbox_lifecycle.adapters.composition.environ import DEFAULT_EGRESS_ALLOW
from sandbox_lifecycle.adapters.composition.settings import Settings


def test_the_lightdash_host_is_allowed_for_every_kind_with_its_port_when_it_names_one() -> None:
    plain = Settings.from_env({"SANDBOX_LIGHTDASH_URL": "https://ld.example.com/project"})
    with_port = Settings.from_env({"SANDBOX_LIGHTDASH_URL": "http://ld.example.com:8080"})
    for kind, default in DEFAULT_EGRESS_ALLOW.items():
        assert plain.provider_settings["docker"].egress.allow[kind] == (*default, "ld.example.com")
        assert with_port.provider_settings["docker"].egress.allow[kind] == (*default, "ld.example.com:8080")


def test_a_lightdash_host_already_listed_is_not_listed_twice() -> None:
    settings = Settings.from_env(
        {
            "SANDBOX_LIGHTDASH_URL": "https://ld.example.com",
            "SANDBOX_EGRESS_ALLOW_DATA_APP": "api.anthropic.com, ld.example.com",
        }
    )
    assert settings.provider_settings["docker"].egress.allow["data-app"] == (
        "api.anthropic.com",
        "ld.example.com",
    )


def test_doctor_says_where_snapshots_are_kept() -> None:
    e2b = Settings.from_env({"SANDBOX_PROVIDER": "e2b", "E2B_API_KEY": "k", "ANTHROPIC_API_KEY": "a"})
    assert e2b.describe()["snapshots"] == "kept by E2B (native pause)"
    docker = Settings.from_env({"SANDBOX_PROVIDER": "docker"})
    assert docker.describe()["snapshots"] != "kept by E2B (native pause)"
