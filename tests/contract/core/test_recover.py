"""`recover`: one stuck or failed sandbox re-driven now, on the fake provider over the in-memory store and
both real ones (the Docker engine: tests/integration/adapters/providers/docker/test_recover.py).

A crash is simulated by appending an intent and never driving it; the clock never moves, so the lease
the sweep would wait for has not run out: `recover` does not wait for it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.async_service import AsyncSandboxService
from sandbox_lifecycle.core.errors import ConcurrencyError, ProviderError, SandboxBusy, SandboxNotFound
from sandbox_lifecycle.core.ports import SnapshotInfo
from sandbox_lifecycle.core.rescue import Rescuer
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import FakeProvider


def _events(service: SandboxService, sid: str) -> list[tuple[str, str, str]]:
    return [(e.type, e.metadata["actor"], e.metadata["reason"]) for e in service.events(sandbox_id=sid)]


def _crash_after(service: SandboxService, sid: str, cmd: sb.Command) -> None:
    """The intent recorded, its side effect never run: a process killed right after the append."""
    service.kernel.apply(service.load(sid), cmd)


def test_an_unknown_sandbox_is_a_clear_error(service: SandboxService) -> None:
    with pytest.raises(SandboxNotFound, match="nope"):
        service.recover("nope")


def test_a_sandbox_stuck_suspending_is_suspended_at_once_and_a_second_recover_does_nothing(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app", "conv").id
    _crash_after(service, sid, sb.RequestSuspend())
    assert service.sweep().recovered == []  # its lease has not run out: the sweep leaves it

    since = service.load(sid).state_since
    assert since is not None
    done = service.recover(sid, actor="operator")
    assert (done.before, done.state, done.error) == (lc.SUSPENDING, lc.SUSPENDED, None)
    assert done.actions == [
        f"took over the suspending in flight since {since.isoformat(timespec='seconds')}",
        "re-driven from the provider's state: suspended",
    ]
    assert _events(service, sid)[-2:] == [
        ("RecoveryStarted", "operator", "recover"),
        ("Suspended", "reconciler", "recover"),
    ]
    assert provider.instances == {} and len(provider.snapshots) == 1

    logged = len(_events(service, sid))
    again = service.recover(sid)
    assert (again.before, again.state, again.actions) == (lc.SUSPENDED, lc.SUSPENDED, [])
    assert len(_events(service, sid)) == logged  # idempotent: nothing recorded


def test_a_create_interrupted_is_adopted_if_the_provider_has_it_else_expired(
    service: SandboxService, provider: FakeProvider
) -> None:
    # Two sandboxes stuck creating: one the provider made, one it never saw.
    for sid, provider_has_it in (("made0000", True), ("never000", False)):
        service.kernel.apply(sb.initial(sid), sb.Create(kind="data-app", provider="fake"))
        if provider_has_it:
            provider.create(sid, "data-app")
        done = service.recover(sid)
        assert done.state == (lc.IDLE if provider_has_it else lc.EXPIRED)


def test_a_container_removed_behind_the_services_back_is_recorded_lost(
    service: SandboxService, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    sid = service.create("data-app", "conv").id
    ref = service.get(sid).provider_ref
    del provider.instances[sid]  # removed behind the service's back
    with caplog.at_level(logging.WARNING, logger="sandbox_lifecycle"):
        done = service.recover(sid)
    detail = f"instance {ref} is gone from the provider (found by recover)"
    assert done.actions == [f"recorded the workspace lost: {detail}"]
    assert f"recover: sandbox {sid} expired: {detail}" in caplog.text
    assert (done.before, done.state) == (lc.IDLE, lc.EXPIRED)
    assert service.get(sid).expired_reason == "provider_lost"
    assert _events(service, sid)[-1] == ("ProviderLost", "api", "provider_lost")
    assert service.recover(sid).actions == []


def test_an_instance_that_is_not_the_logs_is_removed_with_the_loss_recorded(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app", "conv").id
    provider.instances[sid].ref = "someone-elses"
    done = service.recover(sid)
    assert done.state == lc.EXPIRED and sid not in provider.instances
    assert "removed instance someone-elses, which the log does not name" in done.actions


def test_a_suspended_sandbox_whose_snapshot_is_gone_is_recorded_lost(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app", "conv").id
    row = service.suspend(sid)
    provider.delete_snapshot(SnapshotInfo(row.snapshot_key or "", None, None))
    done = service.recover(sid)
    assert (done.state, service.get(sid).expired_reason) == (lc.EXPIRED, "provider_lost")


def test_an_instance_running_for_a_suspended_sandbox_is_removed_and_it_stays_suspended(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app", "conv").id
    service.suspend(sid)
    provider.create(sid, "data-app")  # a resume's container outliving its failed record, say
    done = service.recover(sid)
    assert done.state == lc.SUSPENDED and sid not in provider.instances
    assert len(done.actions) == 1 and "running for a suspended sandbox" in done.actions[0]


def test_what_an_expired_sandbox_left_is_removed(service: SandboxService, provider: FakeProvider) -> None:
    sid = service.create("data-app", "conv").id
    service.suspend(sid)
    kept = dict(provider.snapshots)
    service.destroy(sid)
    provider.snapshots.update(kept)  # a delete that never happened
    provider.create(sid, "data-app")
    done = service.recover(sid)
    assert (done.before, done.state) == (lc.EXPIRED, lc.EXPIRED)
    assert sid not in provider.instances and provider.snapshots == {}
    assert len(done.actions) == 2
    assert service.recover(sid).actions == []


def test_a_destroy_that_fails_again_is_reported_and_left_for_the_lease(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app", "conv").id
    _crash_after(service, sid, sb.Destroy())
    provider.fail["destroy"] = ProviderError("engine unreachable")
    done = service.recover(sid)
    assert done.state == lc.DESTROYING
    assert done.error is not None and "engine unreachable" in done.error
    assert done.actions[-1] == f"re-driving it failed: {done.error}"
    done = service.recover(sid)
    assert (done.state, done.error) == (lc.EXPIRED, None)
    assert service.get(sid).expired_reason == "user"  # the destroy's own reason, as the intent said


def test_a_consistent_sandbox_is_left_alone(service: SandboxService) -> None:
    sid = service.create("data-app", "conv").id
    logged = _events(service, sid)
    done = service.recover(sid)
    assert (done.before, done.state, done.actions, done.error) == (lc.IDLE, lc.IDLE, [], None)
    assert _events(service, sid) == logged


def test_the_async_service_recovers_too(service: SandboxService) -> None:
    sid = service.create("data-app", "conv").id
    _crash_after(service, sid, sb.RequestSuspend())

    async def main() -> str:
        async with AsyncSandboxService(service, max_workers=2) as calls:
            return (await calls.recover(sid)).state

    assert asyncio.run(main()) == lc.SUSPENDED


def test_a_sandbox_that_keeps_changing_under_recover_is_reported_busy(
    service: SandboxService, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = service.create("data-app", "conv").id

    def always_raced(self: Rescuer, state: sb.Sandbox, reason: str, actor: str) -> sb.Sandbox:
        raise ConcurrencyError(sid, state.version, "another writer")

    monkeypatch.setattr(Rescuer, "_take_over", always_raced)
    with pytest.raises(SandboxBusy) as raised:
        service.recover(sid)
    assert (raised.value.sandbox_id, raised.value.state) == (sid, "contended")


def test_a_snapshot_that_cannot_be_checked_is_kept_as_intact(
    service: SandboxService,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sid = service.create("data-app", "conv").id
    key = service.suspend(sid).snapshot_key

    def unreachable(snapshot: SnapshotInfo) -> bool:
        raise ProviderError("snapshot store unreachable")

    monkeypatch.setattr(provider, "snapshot_ok", unreachable)
    with caplog.at_level(logging.WARNING, logger="sandbox_lifecycle"):
        done = service.recover(sid)
    assert (done.state, done.actions) == (lc.SUSPENDED, [])  # a wrong "lost" would give the workspace up
    assert f"could not check snapshot {key} (kept as intact)" in caplog.text


def test_a_race_lost_once_is_looked_at_again(
    service: SandboxService, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = service.create("data-app", "conv").id
    _crash_after(service, sid, sb.RequestSuspend())
    take_over = Rescuer._take_over
    raced: list[int] = []

    def raced_once(self: Rescuer, state: sb.Sandbox, reason: str, actor: str) -> sb.Sandbox:
        if not raced:
            raced.append(state.version)
            raise ConcurrencyError(sid, state.version, "another writer")
        return take_over(self, state, reason, actor)

    monkeypatch.setattr(Rescuer, "_take_over", raced_once)
    assert service.recover(sid).state == lc.SUSPENDED
