"""Interrupted resumes and suspends never expire a sandbox whose snapshot is stored and verified.

Found by bench/faults_bench.py (docs/reliability.md, bug 2): a PostgreSQL restart and an S3 503 window
left three sandboxes with good snapshots ``expired`` (``provider_lost``) and their workspaces gone.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost, SandboxExpired
from sandbox_lifecycle.core.ports import SnapshotInfo
from sandbox_lifecycle.core.projection import Policy, project
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.codec import encode
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def _service(provider: FakeProvider, clock: Clock | None = None) -> SandboxService:
    return SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=clock or Clock())


def _suspended_with_file(service: SandboxService) -> str:
    with service.turn("conv", "data-app") as sbx:
        sbx.write_file("app/main.py", "print(1)")
    assert service.get(sbx.id).state == lc.SUSPENDED
    return sbx.id


def _intent_left_by_a_dead_process(service: SandboxService, sid: str, cmd: sb.Command) -> None:
    state = service.load(sid)
    events = sb.decide(state, cmd, service.clock())
    after = sb.replay(sid, events, start=state)
    service.store.append(sid, state.version, [encode(e) for e in events], projection=project(after, POLICY))


def test_a_container_lost_during_resume_leaves_it_suspended_with_its_snapshot() -> None:
    provider = FakeProvider()
    service = _service(provider)
    sid = _suspended_with_file(service)
    key = service.get(sid).snapshot_key
    # The resume's network was removed under it: the provider reports its container lost.
    provider.fail["resume"] = ProviderLost("start container: the container no longer exists (network gone)")
    with pytest.raises(ProviderError) as raised:
        service.resume(sid)
    assert not isinstance(raised.value, SandboxExpired)
    row = service.get(sid)
    assert row.state == lc.SUSPENDED
    assert row.snapshot_key == key and key in provider.snapshots
    assert service.history(sid)[-1].type == "ResumeFailed"
    with service.turn("conv", "data-app") as again:
        assert again.id == sid
        assert again.read_file("app/main.py") == b"print(1)"


def test_a_resume_whose_snapshot_is_missing_still_expires() -> None:
    provider = FakeProvider()
    service = _service(provider)
    sid = _suspended_with_file(service)
    provider.snapshots.clear()
    with pytest.raises(SandboxExpired, match="provider_lost"):
        service.resume(sid)
    assert service.get(sid).state == lc.EXPIRED


class _RemovalRaces(FakeProvider):
    """A suspend that stores its snapshot, then finds its container's removal already under way (another
    caller removing it): Docker's 409 "removal of container … is already in progress"."""

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        super().suspend(sandbox_id, ref, kind, snapshot_key)
        raise ProviderError(f"remove container {ref}: removal of container {ref} is already in progress")


def test_a_suspend_whose_container_vanished_after_the_snapshot_was_stored_completes() -> None:
    provider = _RemovalRaces()
    service = _service(provider)
    row = service.create("data-app", "conv")
    service.write_file(row.id, "app/main.py", b"print(2)")
    pending = sb.snapshot_key(row.id, service.load(row.id).version + 1)
    service.suspend(row.id)
    after = service.get(row.id)
    assert after.state == lc.SUSPENDED
    assert after.snapshot_key == pending
    assert service.history(row.id)[-1].type == "Suspended"
    # The sweep keeps it (it is the sandbox's snapshot now, not an orphan) and a turn gets it back.
    service.reconcile()
    assert pending in provider.snapshots
    with service.turn("conv", "data-app") as again:
        assert again.read_file("app/main.py") == b"print(2)"


def test_a_suspend_that_failed_before_storing_its_snapshot_still_returns_to_idle() -> None:
    provider = FakeProvider()
    service = _service(provider)
    row = service.create("data-app")
    provider.fail["suspend"] = ProviderError("snapshot store unreachable")
    with pytest.raises(ProviderError):
        service.suspend(row.id)
    assert service.get(row.id).state == lc.IDLE
    assert row.id in provider.instances


class _RacingSweeps(FakeProvider):
    """Two sweeps re-drive the same resume: the second enters ``resume`` after the first loaded the
    intent, and completes its provider call only after the first recorded ``Resumed``."""

    def __init__(self) -> None:
        super().__init__()
        self.service: SandboxService | None = None
        self.second: threading.Thread | None = None
        self.second_entered = threading.Event()
        self.first_recorded = threading.Event()
        self._n = 0
        self._lock = threading.Lock()

    def resume(
        self, sandbox_id: str, kind: str, snapshot: SnapshotInfo, allow: Sequence[str] | None = None
    ) -> str:
        with self._lock:
            self._n += 1
            n = self._n
        if n == 2:
            # As Docker's resume: the snapshot is opened and verified first (an open archive outlives its
            # deletion), the stale container is removed and a new one started from it afterwards.
            opened = Path(tempfile.mkdtemp(prefix="opened-snapshot-"))
            shutil.copytree(self.snapshots[snapshot.key], opened, dirs_exist_ok=True)
            self.second_entered.set()
            assert self.first_recorded.wait(10)
            self._drop(sandbox_id)
            inst = self._new(sandbox_id, kind)
            shutil.copytree(opened, inst.home, dirs_exist_ok=True)
            return inst.ref
        if n == 1 and self.service is not None:
            svc = self.service
            self.second = threading.Thread(target=svc.reconcile, name="second-sweep")
            self.second.start()
            # Wait until the second sweep is inside its provider call, or has decided it has none to make.
            while not self.second_entered.is_set() and self.second.is_alive():
                self.second.join(0.01)
        return super().resume(sandbox_id, kind, snapshot, allow)


def test_two_sweeps_re_driving_one_resume_do_not_remove_each_others_container() -> None:
    provider = _RacingSweeps()
    clock = Clock()
    service = _service(provider, clock)
    sid = _suspended_with_file(service)
    # A backend appended the resume and lost its database connection before recording the outcome.
    _intent_left_by_a_dead_process(service, sid, sb.RequestResume())
    clock.advance(minutes=11)
    provider.service = service
    report = service.reconcile()
    provider.first_recorded.set()
    assert provider.second is not None
    provider.second.join(10)
    assert report.recovered == [sid]
    state = service.load(sid)
    assert state.status == lc.IDLE
    # The container the log names is the one that exists, and it holds the workspace.
    assert provider.instances[sid].ref == state.provider_ref
    assert service.read_file(sid, "app/main.py") == b"print(1)"
    assert verify(service.store, POLICY) == []
