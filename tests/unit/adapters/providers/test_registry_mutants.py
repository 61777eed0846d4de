"""What ``adapters/providers/registry.py`` promises a provider that declares only the required parts,
pinned after the 2026-12-08 mutation sample (docs/testing.md, "Mutation scores, 2026-12-08")."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest

from sandbox_lifecycle.adapters.providers.registry import Host, ProviderEntry


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
