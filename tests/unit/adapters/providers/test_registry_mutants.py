"""What ``adapters/providers/registry.py`` promises a provider that declares only the required parts,
pinned after the 2026-12-08 mutation sample (docs/testing.md, "Mutation scores, 2026-12-08")."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import sandbox_lifecycle.adapters.providers as providers_package
from sandbox_lifecycle.adapters.providers import registry
from sandbox_lifecycle.adapters.providers.registry import Host, ProviderEntry
from sandbox_lifecycle.core.errors import ConfigError


class _Bare(ProviderEntry[None]):
    name = "bare"
    extra = "bare"
    library = "json"
    label = "Bare engine"
    unreachable_fix = "none"

    def parse(self, reader: Any, shared: Any) -> None:
        return None

    def build(self, own: None, host: Any) -> Any:
        raise AssertionError("not built here")


class _WithDoctor(_Bare):
    doctor = "checks"


def test_a_provider_that_declares_only_the_required_parts_gets_the_documented_defaults() -> None:
    bare = _Bare()
    assert bare.refuse(None) is None
    assert bare.require(None) is None
    assert bare.secrets(None) == ()
    # An empty mapping, not None: doctor merges it into what it shows.
    assert bare.describe(None) == {}
    assert bare.native_snapshots is None
    assert bare.doctor_module is None


def test_the_doctor_module_is_the_named_submodule_of_the_providers_own_module() -> None:
    assert _WithDoctor().doctor_module == f"{__name__}.checks"


def test_what_a_builder_is_lent_cannot_be_changed_by_it() -> None:
    host = Host(shared=cast(Any, None), snapshot_store=lambda: cast(Any, None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.shared = cast(Any, None)  # type: ignore[misc]


_ENTRY = """
from sandbox_lifecycle.adapters.providers.registry import ProviderEntry


class Entry(ProviderEntry[None]):
    name = "{name}"
    extra = library = label = unreachable_fix = "x"

    def parse(self, reader, shared):
        return None

    def build(self, own, host):
        raise AssertionError


PROVIDER = Entry()
"""


@pytest.fixture
def more_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of extra provider packages beside the real ones; removed again (with the discovery)."""
    folders = tmp_path / "more_providers"
    folders.mkdir()
    monkeypatch.setattr(providers_package, "__path__", [*providers_package.__path__, str(folders)])
    registry.registered.cache_clear()
    try:
        yield folders
    finally:
        registry.registered.cache_clear()
        for name in [n for n in sys.modules if n.startswith(f"{providers_package.__name__}.mutant_")]:
            del sys.modules[name]


def _package(folders: Path, package: str, text: str) -> None:
    (folders / package).mkdir()
    (folders / package / "__init__.py").write_text(text)


def test_a_subpackage_without_a_provider_is_skipped_and_the_folders_after_it_still_count(
    more_folders: Path,
) -> None:
    # Sorted first of all: every provider folder comes after it.
    _package(more_folders, "mutant_a_shared", '"""Shared helpers, no PROVIDER."""\n')
    _package(more_folders, "mutant_b_toy", _ENTRY.format(name="mutant-toy"))
    assert list(registry.registered()) == ["docker", "e2b", "gvisor", "mutant-toy"]


def test_two_folders_declaring_one_name_is_a_config_error_naming_it(more_folders: Path) -> None:
    _package(more_folders, "mutant_twin", _ENTRY.format(name="docker"))
    with pytest.raises(ConfigError, match="two provider folders declare the name 'docker'"):
        registry.registered()
