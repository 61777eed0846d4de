"""Checkpoints, rewind and fork (docs/checkpoints.md), on every event store, through the fake provider and
through E2B with checkpoints on (the real SDK against the loopback E2B server, each suspend a named E2B
snapshot)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sandbox_lifecycle import AsyncSandboxService
from sandbox_lifecycle.adapters.providers.e2b.checkpoints import is_checkpoint_key
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.checkpoints import listed
from sandbox_lifecycle.core.errors import (
    CheckpointNotFound,
    ProviderError,
    SandboxBusy,
    SandboxExpired,
    Unsupported,
)
from sandbox_lifecycle.core.ports import EventStore, ProviderCapabilities, SandboxProvider
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.codec import decode
from tests.support.fakes import Clock, FakeProvider
from tests.support.fixtures.providers import e2b_provider, new_deployment

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


@pytest.fixture(params=["fake", "e2b"])
def provider(request: pytest.FixtureRequest) -> SandboxProvider:
    """The provider the service of this module runs on (the folder's conftest builds the service)."""
    if request.param == "fake":
        return FakeProvider()
    return e2b_provider(request.getfixturevalue("fake_e2b"), new_deployment(), checkpoints=True)


@pytest.fixture
def clock() -> Clock:
    """Starting now: E2B tells a sandbox's last activity by the real clock (its processes' output), so a
    clock in the past would see that activity in its future and never find the sandbox idle."""
    return Clock(datetime.now(UTC))


def stored(provider: SandboxProvider, sandbox_id: str) -> list[str]:
    """The keys of the checkpoint snapshots the provider holds for the sandbox."""
    if isinstance(provider, FakeProvider):
        return [k for k in provider.snapshots if k.startswith(f"snapshots/{sandbox_id}/")]
    return [
        snap.key
        for sid, snap in provider.list_snapshots()
        if sid == sandbox_id and is_checkpoint_key(snap.key)
    ]


def two_turns(service: SandboxService) -> tuple[str, int, int]:
    """Turn 1 writes A, turn 2 writes B; each ends in a suspend. The sandbox and both checkpoints."""
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/a.txt", "A")
    with service.turn("conv", "data-app") as again:
        again.write_file("app/b.txt", "B")
    first, second = service.checkpoints(sbx.id)
    return sbx.id, first.version, second.version


def test_every_suspend_is_a_checkpoint_with_its_reason_and_size(
    service: SandboxService, provider: SandboxProvider
) -> None:
    sid, v1, v2 = two_turns(service)
    cps = service.checkpoints(sid)
    assert [c.version for c in cps] == [v1, v2]
    assert [c.reason for c in cps] == ["turn_end", "turn_end"]
    if isinstance(provider, FakeProvider):
        assert all(c.bytes is not None and c.bytes > 0 for c in cps)
    else:  # E2B does not say how large a snapshot is
        assert all(c.bytes is None for c in cps)
    assert all(c.bytes_new is None for c in cps)  # whole archives: nothing incremental yet
    assert [c.current for c in cps] == [False, True]
    service.resume(sid)
    service.suspend(sid, reason="capacity")
    assert service.checkpoints(sid)[-1].reason == "capacity"


def test_rewind_restores_the_earlier_checkpoint_and_can_be_undone(service: SandboxService) -> None:
    sid, v1, v2 = two_turns(service)
    row = service.rewind(sid, v1, actor="alice")
    assert row.state == lc.SUSPENDED
    rewound = [h for h in service.history(sid) if h.type == "Rewound"]
    assert [(h.data["to_version"], h.actor, h.reason) for h in rewound] == [(v1, "alice", "user")]
    assert service.exists(sid, "app/a.txt") and not service.exists(sid, "app/b.txt")
    # Later checkpoints stay: rewinding to the second brings B back (the live sandbox is suspended first).
    assert {v1, v2} <= {c.version for c in service.checkpoints(sid)}
    service.rewind(sid, v2)
    assert service.read_file(sid, "app/b.txt") == b"B"
    assert any(c.reason == "rewind" for c in service.checkpoints(sid))


def test_an_unknown_or_collected_version_is_refused(service: SandboxService, clock: Clock) -> None:
    sid, v1, _ = two_turns(service)
    with pytest.raises(CheckpointNotFound, match="no checkpoint at version 999"):
        service.rewind(sid, 999)
    with pytest.raises(CheckpointNotFound):
        service.fork(sid, at_version=999)
    service.resume(sid)
    clock.advance(days=8)
    # The idle timer suspends it (a new checkpoint, the current one) and retention collects the older
    # ones, in whichever order the sweep's workers run them: the checkpoint it was resumed from only
    # after that suspend.
    fired: list[str] = []
    for _ in range(3):
        fired += service.fire_due(clock()).fired
    assert f"{sid}:checkpoint" in fired and f"{sid}:idle" in fired
    assert [c.reason for c in service.checkpoints(sid)] == ["idle_timeout"]
    with pytest.raises(CheckpointNotFound):
        service.rewind(sid, v1)


def test_retention_collects_old_checkpoints_and_records_it(
    service: SandboxService, provider: SandboxProvider, clock: Clock
) -> None:
    sid, v1, v2 = two_turns(service)
    clock.advance(days=5)
    service.resume(sid)
    service.suspend(sid)
    v3 = service.checkpoints(sid)[-1].version
    clock.advance(days=3)  # v1 and v2 are 8 days old, v3 is 3 days old and current
    service.sweep(clock())
    assert [c.version for c in service.checkpoints(sid)] == [v3]
    collected = [h for h in service.history(sid) if h.type == "CheckpointCollected"]
    assert sorted(h.data["checkpoint_version"] for h in collected) == [v1, v2]
    assert all(h.actor == "scheduler" and h.reason == "retention" for h in collected)
    assert len(stored(provider, sid)) == 1
    # The current one keeps the sandbox's own retention: when it goes, the sandbox expires.
    clock.advance(days=5)
    service.sweep(clock())
    assert service.get(sid).state == lc.EXPIRED
    assert not stored(provider, sid)


def test_the_reconciler_keeps_every_checkpoint(service: SandboxService, provider: SandboxProvider) -> None:
    sid, _, _ = two_turns(service)
    service.resume(sid)
    report = service.reconcile()
    assert report.removed == []
    assert len(service.checkpoints(sid)) == 2
    assert len(stored(provider, sid)) == 2


def test_destroy_deletes_every_checkpoint(service: SandboxService, provider: SandboxProvider) -> None:
    sid, _, _ = two_turns(service)
    assert len(stored(provider, sid)) == 2
    service.resume(sid)
    service.destroy(sid)
    assert service.checkpoints(sid) == []
    assert not stored(provider, sid)


def test_fork_at_a_checkpoint_is_a_new_sandbox_with_lineage(service: SandboxService) -> None:
    sid, v1, _ = two_turns(service)
    fork = service.fork(sid, at_version=v1, conversation_id="other")
    assert fork.id != sid and fork.kind == "data-app" and fork.state == lc.SUSPENDED
    assert fork.conversation_id == "other"
    assert service.exists(fork.id, "app/a.txt") and not service.exists(fork.id, "app/b.txt")
    assert service.read_file(sid, "app/b.txt") == b"B"  # the source keeps B
    (origin,) = [h for h in service.history(fork.id) if h.type == "ForkedFrom"]
    assert (origin.data["source_id"], origin.data["source_version"]) == (sid, v1)
    (told,) = [h for h in service.history(sid) if h.type == "Forked"]
    assert (told.data["fork_id"], told.data["at_version"]) == (fork.id, v1)


def test_a_fork_survives_its_source(service: SandboxService, clock: Clock) -> None:
    sid, _, v2 = two_turns(service)
    fork = service.fork(sid)  # the latest
    assert [h.data["source_version"] for h in service.history(fork.id) if h.type == "ForkedFrom"] == [v2]
    service.destroy(sid)
    assert service.read_file(fork.id, "app/b.txt") == b"B"


def test_a_conversation_with_a_live_sandbox_cannot_get_a_fork_too(service: SandboxService) -> None:
    sid, _, _ = two_turns(service)
    with pytest.raises(Exception, match="already has it"):
        service.fork(sid, conversation_id="conv")


def test_a_provider_without_checkpoints_refuses_rewind_and_fork(
    store: EventStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = FakeProvider()
    monkeypatch.setattr(
        provider, "capabilities", ProviderCapabilities("none", False, False, True, checkpoints=False)
    )
    service = SandboxService(store, provider, policy=POLICY, clock=clock)
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/a.txt", "A")
    (only,) = service.checkpoints(sbx.id)  # the current snapshot is listed all the same
    with pytest.raises(Unsupported, match="rewinding"):
        service.rewind(sbx.id, only.version)
    with pytest.raises(Unsupported, match="forking"):
        service.fork(sbx.id)
    service.resume(sbx.id)  # not kept: the resume spends it, as before checkpoints
    assert service.checkpoints(sbx.id) == []


def test_folding_the_log_gives_the_same_checkpoints(service: SandboxService, store: EventStore) -> None:
    sid, v1, _ = two_turns(service)
    service.rewind(sid, v1)
    service.fork(sid)
    service.resume(sid)
    state = sb.replay(sid, (decode(r) for r in store.read_stream(sid)))
    assert listed(state) == service.checkpoints(sid)
    # Folded one event at a time from any prefix, the same (the fold is total and incremental).
    records = store.read_stream(sid)
    for cut in range(len(records) + 1):
        head = sb.replay(sid, (decode(r) for r in records[:cut]))
        assert sb.replay(sid, (decode(r) for r in records[cut:]), start=head) == state
    assert verify(store, POLICY) == []


def test_the_async_service_lists_rewinds_and_forks_alike(service: SandboxService) -> None:
    sid, v1, _ = two_turns(service)

    async def run() -> tuple[list[int], str, str]:
        async with AsyncSandboxService(service) as aservice:
            versions = [c.version for c in await aservice.checkpoints(sid)]
            row = await aservice.rewind(sid, v1)
            fork = await aservice.fork(sid, at_version=v1)
            return versions, row.state, fork.state

    versions, state, fork_state = asyncio.run(run())
    assert versions[0] == v1 and state == fork_state == lc.SUSPENDED
    assert not service.exists(sid, "app/b.txt")


def test_an_expired_sandbox_has_nothing_to_rewind_or_fork(service: SandboxService) -> None:
    sid, v1, _ = two_turns(service)
    service.destroy(sid)
    with pytest.raises(SandboxExpired):
        service.rewind(sid, v1)
    with pytest.raises(SandboxExpired):
        service.fork(sid)


def test_a_rewind_while_a_side_effect_is_in_flight_is_busy(
    service: SandboxService, store: EventStore
) -> None:
    sid, v1, _ = two_turns(service)
    state = service.load(sid)
    service.kernel.apply(state, sb.RequestResume())  # a resume whose outcome is not recorded yet
    with pytest.raises(SandboxBusy):
        service.rewind(sid, v1)


def test_a_fork_whose_copy_fails_expires_and_the_source_records_nothing(
    service: SandboxService, provider: SandboxProvider, request: pytest.FixtureRequest
) -> None:
    sid, _, _ = two_turns(service)
    if isinstance(provider, FakeProvider):
        provider.fail["copy_snapshot"] = ProviderError("the store refused")
    else:  # E2B refuses the snapshot of the copy's helper sandbox, past every retry
        request.getfixturevalue("fake_e2b").inject_fault(
            "POST", r"/sandboxes/[^/]+/snapshots", times=99, status=500
        )
    with pytest.raises(ProviderError):
        service.fork(sid)
    (fork,) = [r for r in service.list() if r.id != sid]
    assert (fork.state, fork.expired_reason) == (lc.EXPIRED, "fork_failed")
    assert "Forked" not in [h.type for h in service.history(sid)]
    assert not stored(provider, fork.id)


def test_retention_keeps_the_checkpoint_a_live_sandbox_resumed_from_until_its_next_suspend(
    service: SandboxService,
) -> None:
    # Its next suspend reuses that checkpoint's pieces: the piece collection must still see them named.
    sid, _, _ = two_turns(service)
    service.resume(sid)  # from v2
    live = service.load(sid)
    first, second = live.checkpoints
    assert live.resumed_from == second.snapshot_key
    assert sb.collectible(live, first) and not sb.collectible(live, second)
    service.suspend(sid)
    after = service.load(sid)
    assert after.resumed_from is None
    assert sb.collectible(after, after.checkpoints[1])
