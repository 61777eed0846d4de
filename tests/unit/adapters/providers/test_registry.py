"""A provider registered only in its own folder is found, parsed, built and checked by SANDBOX_PROVIDER.

The folder is written to a temporary directory that joins the folders of ``adapters.providers`` (its
package ``__path__``), as a provider added to the package would: nothing else names it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandbox_lifecycle.adapters.providers as providers_package
from sandbox_lifecycle.adapters.composition.bootstrap import build_provider
from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.entrypoints.cli.doctor import run_checks
from sandbox_lifecycle.adapters.providers import registry
from sandbox_lifecycle.core.errors import ConfigError, ProviderRefused

TOY_ENTRY = '''
"""A provider that exists only in this folder."""

from sandbox_lifecycle.adapters.providers.registry import ProviderEntry
from sandbox_lifecycle.events.values import FieldValues, value_class


@value_class
class ToySettings(FieldValues):
    size: int
    mood: str


class ToyEntry(ProviderEntry[ToySettings]):
    name = "toybox"
    extra = "toybox"
    library = "json"  # installed everywhere: the extra is "there"
    label = "Toy engine"
    unreachable_fix = "wind it up"
    native_snapshots = "kept in the toy's pocket"
    doctor = "doctor"

    def parse(self, reader, shared):
        return ToySettings(
            size=reader.integer("TOYBOX_SIZE", 1, 10, "blocks"), mood=reader.text("TOYBOX_MOOD") or "calm"
        )

    def refuse(self, own):
        if own.mood == "grumpy":
            from sandbox_lifecycle.core.errors import ProviderRefused

            raise ProviderRefused("the toy refuses to play while grumpy")

    def build(self, own, host):
        from tests.support.fakes import FakeProvider

        provider = FakeProvider(deployment=host.deployment)
        provider.toy_size = own.size
        return provider

    def secrets(self, own):
        return (own.mood,) if own.mood.startswith("secret-") else ()

    def describe(self, own):
        return {"toy_size": str(own.size)}


PROVIDER = ToyEntry()
'''

TOY_DOCTOR = """
from sandbox_lifecycle.adapters.observability.health import OK, Check


def check_blocks(ctx):
    return Check("blocks", OK, f"{ctx.provider.toy_size} blocks, mood {ctx.settings.chosen.mood}")


def check_way_out(ctx):
    return Check("egress point", OK, "the toy has no network")


CHECKS = (check_blocks,)
SLOTS = {"egress point": check_way_out}
"""


@pytest.fixture
def toybox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The toy provider's folder, beside the real ones; removed again (with the cached discovery)."""
    folders = tmp_path / "more_providers"
    (folders / "toybox").mkdir(parents=True)
    (folders / "toybox" / "__init__.py").write_text(TOY_ENTRY)
    (folders / "toybox" / "doctor.py").write_text(TOY_DOCTOR)
    monkeypatch.setattr(providers_package, "__path__", [*providers_package.__path__, str(folders)])
    registry.registered.cache_clear()
    try:
        yield tmp_path / "data"
    finally:
        registry.registered.cache_clear()
        for name in [n for n in sys.modules if n.startswith(f"{providers_package.__name__}.toybox")]:
            del sys.modules[name]


def test_the_shipped_providers_are_registered_by_their_folders() -> None:
    assert list(registry.registered()) == ["docker", "e2b", "gvisor"]
    assert registry.entry("docker").extra == "docker" and registry.entry("e2b").library == "e2b"


def test_an_unknown_provider_is_a_config_error_listing_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        registry.entry("podman")
    assert "docker, e2b, gvisor" in str(raised.value) and "'podman'" in str(raised.value)
    with pytest.raises(ConfigError, match="SANDBOX_PROVIDER must be one of docker, e2b, gvisor"):
        Settings.from_env({"SANDBOX_PROVIDER": "podman"})


def test_a_provider_in_its_own_folder_is_found_parsed_and_built(toybox: Path) -> None:
    assert "toybox" in registry.registered()
    env = {"SANDBOX_PROVIDER": "toybox", "TOYBOX_SIZE": "3", "SANDBOX_DATA_DIR": str(toybox)}
    settings = Settings.from_env(env)
    assert settings.provider == "toybox" and settings.chosen.size == 3
    assert settings.describe()["snapshots"] == "kept in the toy's pocket"
    assert settings.describe()["toy_size"] == "3"

    provider: Any = build_provider(settings)
    assert provider.toy_size == 3 and provider.deployment == settings.deployment


def test_its_bad_variables_are_named_with_the_others_and_its_refusal_holds(toybox: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"SANDBOX_PROVIDER": "toybox", "TOYBOX_SIZE": "99", "SANDBOX_LEASE_MS": "soon"})
    assert "TOYBOX_SIZE" in str(raised.value) and "SANDBOX_LEASE_MS" in str(raised.value)
    with pytest.raises(ProviderRefused, match="grumpy"):
        Settings.from_env({"SANDBOX_PROVIDER": "toybox", "TOYBOX_MOOD": "grumpy"})
    # Another provider chosen: the toy's settings are parsed, its refusal is not asked.
    assert Settings.from_env({"SANDBOX_PROVIDER": "docker", "TOYBOX_MOOD": "grumpy"}).provider == "docker"
    assert "secret-sauce" in Settings.from_env({"TOYBOX_MOOD": "secret-sauce"}).secrets()


def test_the_doctor_runs_its_checks(toybox: Path) -> None:
    settings = Settings.from_env({"SANDBOX_PROVIDER": "toybox", "SANDBOX_DATA_DIR": str(toybox)})
    checks = {c.name: c for c in run_checks(settings)}
    assert checks["provider"].detail.startswith("Toy engine reachable")
    assert checks["blocks"].detail == "1 blocks, mood calm"
    assert checks["snapshot store"].detail == "kept in the toy's pocket"
    assert checks["egress point"].detail == "the toy has no network"
    assert checks["gateway"].status == "not configured"  # a slot the toy does not answer
