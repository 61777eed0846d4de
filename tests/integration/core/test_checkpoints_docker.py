"""Rewind and fork on the real Docker engine with SQLite: whole-archive checkpoints restore exactly; on
E2B (the loopback server) they are refused as a missing capability."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.errors import Unsupported
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fixtures.providers import docker_provider, new_deployment, remove_docker_sandboxes

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(hours=1), lease=timedelta(minutes=10))


@pytest.fixture
def docker_service(docker_engine: Any, clean_sqlite_url: str, tmp_path: Path) -> Iterator[SandboxService]:
    deployment = new_deployment()
    store = open_store(clean_sqlite_url)
    try:
        yield SandboxService(
            store, docker_provider(docker_engine, tmp_path / "snapshots", deployment), policy=POLICY
        )
    finally:
        remove_docker_sandboxes(docker_engine, deployments=[deployment])
        store.close()


@pytest.mark.docker
def test_rewind_and_fork_restore_the_first_checkpoint(docker_service: SandboxService, tmp_path: Path) -> None:
    service = docker_service
    sid = service.create(DATA_APP, "conv-ckpt").id
    service.write_file(sid, "app/a.txt", b"A")
    service.suspend(sid)
    service.write_file(sid, "app/b.txt", b"B")  # resumes it
    service.suspend(sid)
    first, second = service.checkpoints(sid)
    assert first.bytes and second.bytes and first.reason == second.reason == "user"

    fork = service.fork(sid, at_version=first.version)
    service.rewind(sid, first.version)
    service.resume(sid)
    assert service.read_file(sid, "app/a.txt") == b"A"
    assert not service.exists(sid, "app/b.txt")

    # The fork has A, not B; the source, rewound forward again, has B back.
    assert fork.state == lc.SUSPENDED and fork.kind == DATA_APP
    assert service.read_file(fork.id, "app/a.txt") == b"A"
    assert not service.exists(fork.id, "app/b.txt")
    service.rewind(sid, second.version)  # suspends the live source first
    service.resume(sid)
    assert service.read_file(sid, "app/b.txt") == b"B"

    # The fork's archive is its own copy: it survives the source's destroy.
    service.suspend(fork.id)
    service.destroy(sid)
    assert service.read_file(fork.id, "app/a.txt") == b"A"
    snapshots = tmp_path / "snapshots"
    assert not [p for p in snapshots.rglob("*") if p.is_file() and f"/{sid}/" in p.as_posix()]
    assert verify(service.store, service.policy) == []


def test_on_e2b_rewind_and_fork_are_refused_as_a_missing_capability(
    fake_e2b: Any, clean_sqlite_url: str
) -> None:
    from tests.support.fixtures.providers import e2b_provider

    store = open_store(clean_sqlite_url)
    service = SandboxService(store, e2b_provider(fake_e2b, new_deployment()), policy=POLICY)
    try:
        with service.turn("conv-e2b-ckpt", DATA_APP) as sbx:
            sbx.write_file("a.txt", "A")
        (only,) = service.checkpoints(sbx.id)  # the paused sandbox, listed while it is current
        with pytest.raises(Unsupported, match="e2b provider does not support rewinding"):
            service.rewind(sbx.id, only.version)
        with pytest.raises(Unsupported, match="e2b provider does not support forking"):
            service.fork(sbx.id)
        assert service.read_file(sbx.id, "a.txt") == b"A"  # nothing was touched
        assert service.checkpoints(sbx.id) == []  # resumed: the pause was the only copy
    finally:
        with contextlib.suppress(Exception):
            service.destroy(sbx.id)
        store.close()
