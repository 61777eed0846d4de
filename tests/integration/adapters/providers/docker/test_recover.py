"""`recover` on the real Docker engine: a container removed behind the service's back, and a sandbox
stuck in a side effect after a crash (the intent recorded, then nothing; or the snapshot stored, then
nothing), each put right at once, with no lease waited out and no sweep."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from tests.support.fixtures.providers import docker_provider, new_deployment, remove_docker_sandboxes

pytestmark = pytest.mark.docker

POLICY = Policy(idle_timeout=timedelta(hours=1), retention=timedelta(hours=1), lease=timedelta(minutes=10))
PAYLOAD = b"written before the crash\n"


@dataclass
class Stack:
    store: SqlEventStore
    service: SandboxService
    client: Any


@pytest.fixture
def stack(docker_client: Any, clean_sqlite_url: str, tmp_path: Path) -> Iterator[Stack]:
    deployment = new_deployment()
    store = open_store(clean_sqlite_url)
    provider = docker_provider(docker_client, tmp_path / "snapshots", deployment)
    try:
        yield Stack(store, SandboxService(store, provider, policy=POLICY), docker_client)
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])
        store.close()


def _with_work(service: SandboxService) -> str:
    sid = service.create(DATA_APP, "conv").id
    service.write_file(sid, "work.txt", PAYLOAD)
    return sid


def test_a_container_removed_behind_the_services_back_is_recorded_lost(stack: Stack) -> None:
    service = stack.service
    sid = _with_work(service)
    ref = service.get(sid).provider_ref
    stack.client.containers.get(ref).remove(force=True)

    done = service.recover(sid, actor="operator")
    assert (done.before, done.state) == (lc.IDLE, lc.EXPIRED)
    row = service.get(sid)
    assert row.expired_reason == "provider_lost"
    last = list(service.events(sandbox_id=sid))[-1]
    assert (last.type, last.metadata["actor"]) == ("ProviderLost", "operator")
    assert service.recover(sid).actions == []
    assert verify(stack.store, POLICY) == []


def test_a_sandbox_stuck_suspending_after_a_crash_is_suspended_now_and_keeps_its_work(stack: Stack) -> None:
    service = stack.service
    sid = _with_work(service)
    service.kernel.apply(service.load(sid), sb.RequestSuspend())  # the process died right after this

    done = service.recover(sid)
    assert (done.before, done.state, done.error) == (lc.SUSPENDING, lc.SUSPENDED, None)
    assert service.provider.instance(sid) is None  # the compute is released
    service.resume(sid)
    assert service.read_file(sid, "work.txt") == PAYLOAD
    assert verify(stack.store, POLICY) == []


def test_a_suspend_whose_snapshot_was_stored_before_the_crash_is_recorded_with_it(stack: Stack) -> None:
    service = stack.service
    sid = _with_work(service)
    state = service.kernel.apply(service.load(sid), sb.RequestSuspend())
    assert state.kind and state.provider_ref and state.pending_snapshot_key
    # The side effect ran to its end; the process died before recording it.
    service.provider.suspend(sid, state.provider_ref, state.kind, state.pending_snapshot_key)

    done = service.recover(sid)
    assert done.state == lc.SUSPENDED
    assert service.get(sid).snapshot_key == state.pending_snapshot_key
    service.resume(sid)
    assert service.read_file(sid, "work.txt") == PAYLOAD


def test_a_sandbox_stuck_resuming_after_a_crash_is_brought_back_now(stack: Stack) -> None:
    service = stack.service
    sid = _with_work(service)
    service.suspend(sid)
    service.kernel.apply(service.load(sid), sb.RequestResume())

    done = service.recover(sid)
    assert (done.before, done.state) == (lc.RESUMING, lc.IDLE)
    assert service.read_file(sid, "work.txt") == PAYLOAD
    assert service.recover(sid).actions == []
    assert verify(stack.store, POLICY) == []
