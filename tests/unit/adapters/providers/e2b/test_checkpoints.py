"""E2B checkpoints (E2B_CHECKPOINTS=1): each suspend a named E2B snapshot, rewind and fork through the
real SDK against the loopback E2B server; off by default, where rewind and fork stay refused."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.providers.e2b import checkpoints
from sandbox_lifecycle.adapters.providers.e2b.checkpoints import is_checkpoint_key, key_of, snapshot_name
from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.errors import (
    CapacityExceeded,
    ConfigError,
    ProviderError,
    SandboxExpired,
    SnapshotNotFound,
    Unsupported,
)
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.ports import SnapshotInfo
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.sandbox import snapshot_key
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fake_e2b import FakeE2B
from tests.support.fakes import Clock, InMemoryEventStore
from tests.support.fixtures.e2b import fake_env

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))
SANDBOX = r"/sandboxes/[^/]+"


@pytest.fixture
def on(settings: E2BSettings) -> E2BProvider:
    return E2BProvider(dataclasses.replace(settings, checkpoints=True))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(on: E2BProvider, clock: Clock) -> SandboxService:
    return SandboxService(InMemoryEventStore(), on, policy=POLICY, clock=clock)


def two_checkpoints(service: SandboxService) -> tuple[str, int, int]:
    sid = service.create(DATA_APP, "conv").id
    service.write_file(sid, "app/a.txt", b"A")
    service.suspend(sid)
    service.write_file(sid, "app/b.txt", b"B")  # resumes it
    service.suspend(sid)
    first, second = service.checkpoints(sid)
    return sid, first.version, second.version


# --- names ----------------------------------------------------------------------------------------------


@given(st.from_regex(r"[a-z0-9]{1,40}", fullmatch=True), st.integers(1, 10**12 - 1), st.text(min_size=1))
def test_a_core_key_and_its_snapshot_name_map_both_ways(sid: str, version: int, deployment: str) -> None:
    key = snapshot_key(sid, version)
    name = snapshot_name(deployment, key)
    assert key_of(deployment, name) == (sid, key)
    # However E2B spells it back: namespaced, tagged.
    assert key_of(deployment, f"team-slug/{name}:latest") == (sid, key)
    # Another deployment's name is never ours.
    assert key_of(deployment + "x", name) is None


def test_a_key_e2b_names_cannot_carry_gets_a_digest_and_is_not_listed() -> None:
    key = snapshot_key("Has_Upper", 3)
    name = snapshot_name("prod", key)
    assert name.startswith("sl-") and "Has_Upper" not in name
    assert name == snapshot_name("prod", key) != snapshot_name("staging", key)
    assert key_of("prod", name) is None
    assert is_checkpoint_key(key) and not is_checkpoint_key("i0123456789abcdef")


def test_the_setting_is_off_by_default_and_parsed_strictly(fake_e2b: FakeE2B) -> None:
    assert E2BSettings.from_env(fake_env(fake_e2b)).checkpoints is False
    assert E2BSettings.from_env({**fake_env(fake_e2b), "E2B_CHECKPOINTS": "ON"}).checkpoints is True
    assert E2BSettings.from_env({**fake_env(fake_e2b), "E2B_CHECKPOINTS": "0"}).checkpoints is False
    with pytest.raises(ConfigError, match="E2B_CHECKPOINTS must be one of"):
        E2BSettings.from_env({**fake_env(fake_e2b), "E2B_CHECKPOINTS": "maybe"})


# --- off ------------------------------------------------------------------------------------------------


def test_off_a_suspend_pauses_and_rewind_fork_and_copy_are_refused(
    provider: E2BProvider, fake_e2b: FakeE2B
) -> None:
    assert provider.capabilities.checkpoints is False
    service = SandboxService(InMemoryEventStore(), provider, policy=POLICY)
    sid = service.create(DATA_APP).id
    service.suspend(sid)
    assert fake_e2b.requests("POST", SANDBOX + "/snapshots") == []
    assert len(fake_e2b.requests("POST", SANDBOX + "/pause")) == 1
    (cp,) = service.checkpoints(sid)
    with pytest.raises(Unsupported):
        service.rewind(sid, cp.version)
    with pytest.raises(Unsupported):
        service.fork(sid)
    with pytest.raises(Unsupported, match="E2B_CHECKPOINTS"):
        provider.copy_snapshot(SnapshotInfo(snapshot_key(sid, 2), None, None), snapshot_key("f", 1))


# --- on -------------------------------------------------------------------------------------------------


def test_a_suspend_is_a_named_snapshot_then_the_sandbox_goes(
    service: SandboxService, on: E2BProvider, fake_e2b: FakeE2B
) -> None:
    assert on.capabilities.checkpoints is True
    sid = service.create(DATA_APP).id
    ref = service.get(sid).provider_ref
    service.suspend(sid)
    (taken,) = fake_e2b.requests("POST", SANDBOX + "/snapshots")
    assert taken.path == f"/sandboxes/{ref}/snapshots"
    (cp,) = service.checkpoints(sid)
    assert taken.body == {"name": snapshot_name("default", cp.snapshot_key)}
    # Taken, then the compute released: killed, not paused (a resume makes a sandbox from the snapshot).
    assert fake_e2b.requests("POST", SANDBOX + "/pause") == []
    assert [r.path for r in fake_e2b.requests("DELETE", SANDBOX)] == [f"/sandboxes/{ref}"]
    assert [s.name for s in fake_e2b.snapshots()] == [snapshot_name("default", cp.snapshot_key)]
    assert on.snapshot_ok(SnapshotInfo(cp.snapshot_key, None, None))


def test_rewind_and_fork_restore_the_first_checkpoint(service: SandboxService, fake_e2b: FakeE2B) -> None:
    sid, v1, v2 = two_checkpoints(service)
    fork = service.fork(sid, at_version=v1)
    service.rewind(sid, v1)
    service.resume(sid)
    assert service.read_file(sid, "app/a.txt") == b"A"
    assert not service.exists(sid, "app/b.txt")
    # The resume made a sandbox from the snapshot, with our metadata, egress and public traffic off.
    made = fake_e2b.sandbox(service.get(sid).provider_ref)
    assert made.template_id == snapshot_name("default", service.checkpoints(sid)[0].snapshot_key)
    assert made.metadata["sandbox_lifecycle_id"] == sid and made.metadata["kind"] == DATA_APP
    assert made.network["allowPublicTraffic"] is False and made.traffic_token

    assert fork.state == lc.SUSPENDED and fork.kind == DATA_APP
    assert service.read_file(fork.id, "app/a.txt") == b"A"
    assert not service.exists(fork.id, "app/b.txt")
    service.rewind(sid, v2)  # suspends the live source first: a third checkpoint
    service.resume(sid)
    assert service.read_file(sid, "app/b.txt") == b"B"
    assert len(service.checkpoints(sid)) == 3

    # The fork's snapshot is its own: it survives the source's destroy, which deletes the source's.
    service.suspend(fork.id)
    service.destroy(sid)
    assert not [s for s in fake_e2b.snapshots() if f"-{sid}-" in s.name]
    assert service.read_file(fork.id, "app/a.txt") == b"A"
    # Nothing of ours runs but the fork: the copy's helper sandbox is gone.
    running = [s for s in fake_e2b.sandboxes() if s.state == "running"]
    assert [s.metadata["sandbox_lifecycle_id"] for s in running] == [fork.id]
    assert verify(service.store, service.policy) == []


def test_retention_deletes_the_snapshot_and_a_resume_from_a_lost_one_expires(
    service: SandboxService, fake_e2b: FakeE2B, clock: Clock
) -> None:
    sid, _, _ = two_checkpoints(service)
    clock.advance(days=5)
    service.resume(sid)
    service.suspend(sid)
    clock.advance(days=3)  # v1 and v2 are 8 days old
    service.sweep(clock())
    (kept,) = service.checkpoints(sid)
    assert [s.name for s in fake_e2b.snapshots()] == [snapshot_name("default", kept.snapshot_key)]
    # E2B loses the current one: the resume fails clearly and the sandbox expires (nothing to restore).
    [snapshot] = fake_e2b.snapshots()
    service.provider.delete_snapshot(SnapshotInfo(kept.snapshot_key, None, None))
    service.provider.delete_snapshot(SnapshotInfo(kept.snapshot_key, None, None))  # idempotent
    assert snapshot.name not in [s.name for s in fake_e2b.snapshots()]
    with pytest.raises(SandboxExpired):
        service.resume(sid)
    assert service.get(sid).state == lc.EXPIRED


def test_the_reconciler_keeps_named_snapshots_the_log_holds_and_removes_orphans(
    service: SandboxService, on: E2BProvider, fake_e2b: FakeE2B
) -> None:
    sid, _, _ = two_checkpoints(service)
    listed = on.list_snapshots()
    assert sorted(k.key for s, k in listed if s == sid) == sorted(
        c.snapshot_key for c in service.checkpoints(sid)
    )
    # An orphan: a snapshot of this deployment that no stream names (a suspend that crashed unrecorded).
    ref = on.create("ghost0001", DATA_APP)
    on.suspend("ghost0001", ref, DATA_APP, snapshot_key("ghost0001", 2))
    report = service.reconcile()
    assert any("ghost0001" in m for m in report.removed)
    assert not [s for s in fake_e2b.snapshots() if "-ghost0001-" in s.name]
    assert len([s for s in fake_e2b.snapshots() if f"-{sid}-" in s.name]) == 2


def test_a_fork_of_a_collected_checkpoint_fails_and_the_fork_expires(
    service: SandboxService, on: E2BProvider, fake_e2b: FakeE2B
) -> None:
    sid, v1, _ = two_checkpoints(service)
    first = service.checkpoints(sid)[0]
    on.delete_snapshot(SnapshotInfo(first.snapshot_key, None, None))  # gone behind the log's back
    with pytest.raises(SnapshotNotFound) as lost:
        service.fork(sid, at_version=v1)
    assert lost.value.key == first.snapshot_key
    (fork,) = [r for r in service.list() if r.id != sid]
    assert fork.state == lc.EXPIRED
    assert [h.type for h in service.history(sid) if h.type == "Forked"] == []


def test_a_destroy_after_a_suspend_here_lists_nothing_another_process_lists(
    on: E2BProvider, settings: E2BSettings, fake_e2b: FakeE2B
) -> None:
    ref = on.create("sbx0001", DATA_APP)
    on.suspend("sbx0001", ref, DATA_APP, snapshot_key("sbx0001", 2))
    listings = len(fake_e2b.requests("GET", r"/v2/sandboxes"))
    on.destroy("sbx0001", None)  # the service then deletes the snapshots
    assert len(fake_e2b.requests("GET", r"/v2/sandboxes")) == listings
    # Another replica never saw the suspend: it looks (an instance of a lost create may run).
    other = E2BProvider(dataclasses.replace(settings, checkpoints=True))
    other.destroy("sbx0001", None)
    assert len(fake_e2b.requests("GET", r"/v2/sandboxes")) == listings + 1
    # A resume here makes an instance again: its destroy is by ref, or looks.
    snap = on.resume("sbx0001", DATA_APP, SnapshotInfo(snapshot_key("sbx0001", 2), None, None))
    on.destroy("sbx0001", None)
    assert snap not in [s.sandbox_id for s in fake_e2b.sandboxes()]


def test_a_resume_from_a_checkpoint_gets_the_logs_egress_again(
    service: SandboxService, fake_e2b: FakeE2B
) -> None:
    sid = service.create(DATA_APP).id
    service.set_egress(sid, ["pkgs.test"], reason="pip install")
    service.suspend(sid)
    service.resume(sid)
    # A new E2B sandbox (made from the snapshot with the kind's allow-list), then the log's policy on it.
    made = fake_e2b.sandbox(service.get(sid).provider_ref or "")
    assert made.network["allowOut"] == ["pkgs.test"]
    assert made.traffic_token  # public traffic off on the new sandbox too


def test_a_resume_e2b_refuses_is_a_provider_error_and_the_checkpoint_stays(
    service: SandboxService, on: E2BProvider, fake_e2b: FakeE2B
) -> None:
    sid = service.create(DATA_APP).id
    service.suspend(sid)
    fake_e2b.inject_fault("POST", r"/v2/sandboxes", status=500)  # a create is never retried
    with pytest.raises(ProviderError, match=r"E2B resuming \S+ from snapshot \S+ failed") as refused:
        on.resume(sid, DATA_APP, SnapshotInfo(service.checkpoints(sid)[0].snapshot_key, None, None))
    assert refused.value.retryable  # a 5xx: a later resume may work
    # Past E2B's concurrency limit for longer than the retries wait: our own capacity error, as it is.
    fake_e2b.max_running = 0
    with pytest.raises(CapacityExceeded):
        service.resume(sid)
    fake_e2b.max_running = None
    assert service.get(sid).state == lc.SUSPENDED
    service.resume(sid)
    assert service.get(sid).state in lc.LIVE


def test_copy_answers_the_forks_snapshot_and_listing_pages_are_bounded(
    on: E2BProvider, fake_e2b: FakeE2B, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = on.create("src0001", DATA_APP)
    on.suspend("src0001", ref, DATA_APP, snapshot_key("src0001", 2))
    copied = on.copy_snapshot(
        SnapshotInfo(snapshot_key("src0001", 2), None, None), snapshot_key("fork0001", 1)
    )
    assert copied == SnapshotInfo(snapshot_key("fork0001", 1), None, None)
    # Through a helper sandbox of the fork's, made from the source's snapshot: no kind, nothing runs in it.
    helper = fake_e2b.requests("POST", r"/v2/sandboxes")[-1].body
    assert helper["templateID"] == snapshot_name("default", snapshot_key("src0001", 2))
    assert helper["metadata"] == {"sandbox_lifecycle_id": "fork0001", "managed": "1", "deployment": "default"}
    assert on.snapshot_ok(copied)
    # The copy's helper sandbox is gone and known gone: the fork's destroy does not kill it again.
    kills = len(fake_e2b.requests("DELETE", SANDBOX))
    on.destroy("fork0001", None)
    assert len(fake_e2b.requests("DELETE", SANDBOX)) == kills
    # Listed one per page (E2B pages by its own size), every page is read ...
    fake_e2b.max_page_size = 1
    assert sorted(s for s, _ in on.list_snapshots()) == ["fork0001", "src0001"]
    # ... up to a bound: a listing that never ends is an error, not a hang.
    monkeypatch.setattr(checkpoints, "MAX_LIST_PAGES", 1)
    with pytest.raises(ProviderError, match="did not end within 1 pages"):
        on.list_snapshots()
