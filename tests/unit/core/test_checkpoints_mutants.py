"""Rules of ``core/checkpoints.py`` that the 2026-12-08 mutation sample got past (docs/testing.md,
"Mutation scores, 2026-12-08"), on the fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_lifecycle.core import checkpoints
from sandbox_lifecycle.core.errors import ConcurrencyError, SandboxBusy, SandboxNotFound, Unsupported
from sandbox_lifecycle.core.ports import ProviderCapabilities
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.records import SandboxRow
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


class _RowGone(InMemoryEventStore):
    """A store whose row of a sandbox is gone once ``gone`` is set (purged by another process)."""

    gone: str | None = None

    def get_sandbox(self, sandbox_id: str) -> SandboxRow | None:
        return None if sandbox_id == self.gone else super().get_sandbox(sandbox_id)


def test_a_rewind_whose_row_is_gone_afterwards_says_not_found_and_never_returns_none() -> None:
    store = _RowGone()
    service = SandboxService(store, FakeProvider(), policy=POLICY, clock=Clock())
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/a.txt", "A")
    version = service.checkpoints(sbx.id)[0].version
    store.gone = sbx.id

    with pytest.raises(SandboxNotFound):
        service.rewind(sbx.id, version)


def test_a_provider_without_checkpoints_is_named_in_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider()
    monkeypatch.setattr(
        provider, "capabilities", ProviderCapabilities("none", False, False, True, checkpoints=False)
    )
    service = SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=Clock())
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/a.txt", "A")

    with pytest.raises(Unsupported) as refused:
        service.fork(sbx.id)
    assert refused.value.provider == provider.name
    assert refused.value.what == "forking a sandbox from a checkpoint"


def test_a_fork_whose_new_id_is_taken_fails_and_leaves_the_source_unforked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = FakeProvider()
    service = SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=Clock())
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/a.txt", "A")
    other = service.create("data-app").id
    copies = [c for c in provider.calls if c[0] == "copy_snapshot"]
    # The new id drawn for the fork is one a stream already has (no conversation is named).
    monkeypatch.setattr(checkpoints, "random_id", lambda: other + "0" * 16)

    with pytest.raises(ConcurrencyError):
        service.fork(sbx.id)

    assert [h.type for h in service.history(sbx.id) if h.type == "Forked"] == []
    assert [c for c in provider.calls if c[0] == "copy_snapshot"] == copies


def test_a_fork_gets_an_id_of_the_same_shape_as_a_created_sandbox() -> None:
    service = SandboxService(InMemoryEventStore(), FakeProvider(), policy=POLICY, clock=Clock())
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/a.txt", "A")
    assert len(service.fork(sbx.id).id) == len(sbx.id)


def test_a_fork_into_a_conversation_that_has_a_sandbox_names_that_sandbox() -> None:
    service = SandboxService(InMemoryEventStore(), FakeProvider(), policy=POLICY, clock=Clock())
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/a.txt", "A")
    taken = service.create("data-app", conversation_id="other").id

    with pytest.raises(SandboxBusy) as busy:
        service.fork(sbx.id, conversation_id="other")
    assert busy.value.sandbox_id == taken
    assert "conversation other already has it" in str(busy.value)
