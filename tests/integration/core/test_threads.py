"""One SandboxService shared by the threads of a web server, and the ticker an application embeds.

The service comes from ``sandbox_lifecycle.connect()`` exactly as a backend gets it (settings, lazy
provider, SQL store), on the real Docker engine with SQLite and with PostgreSQL; 16 threads run full turns
on 16 conversations at once, released together by a barrier.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import sandbox_lifecycle
from sandbox_lifecycle.core.ports import SandboxProvider
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.conftest import DOCKER_IMAGES
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.e2b import API_KEY
from tests.support.fixtures.providers import (
    LABEL_DEPLOYMENT,
    e2b_provider,
    new_deployment,
    remove_docker_sandboxes,
)
from tests.support.history import lifecycle_types

THREADS = 16


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def fake_e2b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeE2B]:
    """The loopback E2B server; no E2B_* variable of this process may steer the SDK elsewhere."""
    for name in ("E2B_DEBUG", "E2B_HTTP_VERSION", "E2B_DOMAIN", "E2B_API_URL", "E2B_SANDBOX_URL"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeE2B(API_KEY, tmp_path / "e2b")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def docker_deployment(docker_engine: Any) -> Iterator[str]:
    deployment = new_deployment()
    yield deployment
    remove_docker_sandboxes(docker_engine, deployments=[deployment])


def docker_env(url: str, deployment: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SANDBOX_PROVIDER": "docker",
        "SANDBOX_DATABASE_URL": url,
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
        "SANDBOX_DEPLOYMENT": deployment,
        "SANDBOX_DOCKER_IMAGE": DOCKER_IMAGES["data-app"],
        "SANDBOX_AI_WRITEBACK_DOCKER_IMAGE": DOCKER_IMAGES["ai-writeback"],
        "HOME": str(tmp_path),
    }


def run_concurrent_turns(service: SandboxService, run: str) -> dict[str, str]:
    """16 threads, one conversation each, all starting their turn at once; returns conversation -> id."""
    barrier = threading.Barrier(THREADS, timeout=60)

    def one_turn(i: int) -> tuple[str, str]:
        conversation = f"{run}-{i}"
        barrier.wait()
        with service.turn(conversation, "data-app") as sbx:
            sbx.write_file("note.txt", f"written by {conversation}")
            result = sbx.exec(["sh", "-c", 'cat note.txt; echo " $0"', conversation], timeout=60)
            assert result.exit_code == 0, result.stderr
            # Another thread's sandbox would show another conversation's note: isolation, not just success.
            assert result.stdout.strip() == f"written by {conversation} {conversation}"
            assert sbx.read_file("note.txt") == f"written by {conversation}".encode()
            return conversation, sbx.id

    with ThreadPoolExecutor(THREADS) as pool:
        # .result() re-raises a failed turn's own exception, with its traceback.
        return dict(f.result(timeout=300) for f in [pool.submit(one_turn, i) for i in range(THREADS)])


def check_outcome(service: SandboxService, store: Any, sandboxes: dict[str, str], run: str) -> None:
    assert len(set(sandboxes.values())) == THREADS, "two conversations shared a sandbox"
    rows = [row for row in service.list() if (row.conversation_id or "").startswith(f"{run}-")]
    per_conversation = Counter(row.conversation_id for row in rows)
    assert per_conversation == {c: 1 for c in sandboxes}, "a conversation got more than one sandbox"
    assert {row.id: row.state for row in rows} == {sid: "suspended" for sid in sandboxes.values()}
    for sid in sandboxes.values():
        types = lifecycle_types(service.history(sid))
        assert types.count("Created") == 1
        assert types[-2:] == ["SuspendRequested", "Suspended"]
    assert verify(store, service.policy) == []


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sixteen_threads_share_one_service(
    database: str, request: pytest.FixtureRequest, docker_engine: Any, docker_deployment: str, tmp_path: Path
) -> None:
    url = request.getfixturevalue("clean_sqlite_url" if database == "sqlite" else "clean_pg_url")
    service = sandbox_lifecycle.connect(docker_env(url, docker_deployment, tmp_path))
    run = f"thr-{uuid.uuid4().hex[:6]}"
    try:
        sandboxes = run_concurrent_turns(service, run)
        check_outcome(service, service.store, sandboxes, run)
        # Suspending removes the container: nothing of this deployment may still be running.
        running = docker_engine.containers.list(
            filters={"label": [f"{LABEL_DEPLOYMENT}={docker_deployment}", "sandbox-lifecycle.managed=1"]}
        )
        assert running == []
    finally:
        service.store.close()


# ------------------------------------------------------------------------------------------ ticker


class GatedSuspend:
    """The real provider, with suspends held until ``release`` is set (a sweep stuck in a side effect)."""

    def __init__(self, inner: SandboxProvider) -> None:
        self._inner = inner
        self.name = inner.name
        self.entered = threading.Event()
        self.release = threading.Event()

    def suspend(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.release.wait(timeout=30)
        return self._inner.suspend(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def e2b_service(fake: FakeE2B, url: str, idle: timedelta, wrap: Any = None) -> SandboxService:
    provider: Any = e2b_provider(fake, new_deployment())
    if wrap is not None:
        provider = wrap(provider)
    return SandboxService(open_store(url), provider, policy=Policy(idle_timeout=idle))


def scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and "APScheduler" in t.name]


def test_run_scheduler_fires_a_due_idle_timer_while_the_app_runs_and_stops(
    fake_e2b: FakeE2B, clean_sqlite_url: str
) -> None:
    service = e2b_service(fake_e2b, clean_sqlite_url, idle=timedelta(seconds=1))
    before = set(scheduler_threads())
    first = service.create("data-app")
    # The interval sweep is an hour away: only the ticker's exact wake-up can suspend it in time.
    with sandbox_lifecycle.run_scheduler(service, interval=timedelta(hours=1)) as ticker:
        assert ticker.running
        assert wait_for(lambda: service.get(first.id).state == "suspended", timeout=15)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2, "stopping an idle ticker must be prompt"
    assert not ticker.running
    assert set(scheduler_threads()) <= before
    assert lifecycle_types(service.history(first.id))[-3:] == [
        "IdleTimeoutElapsed",
        "SuspendRequested",
        "Suspended",
    ]
    # Stopped means stopped: a deadline that falls due now is left for whoever runs a ticker next.
    second = service.create("data-app")
    time.sleep(1.5)
    assert service.get(second.id).state == "idle"
    with pytest.raises(RuntimeError, match="runs once"):
        ticker.start()


def test_stopping_the_scheduler_waits_for_a_sweep_in_flight_only_as_long_as_told(
    fake_e2b: FakeE2B, clean_sqlite_url: str
) -> None:
    gated: list[GatedSuspend] = []

    def wrap(provider: SandboxProvider) -> GatedSuspend:
        gated.append(GatedSuspend(provider))
        return gated[0]

    service = e2b_service(fake_e2b, clean_sqlite_url, idle=timedelta(milliseconds=300), wrap=wrap)
    row = service.create("data-app")
    ticker = sandbox_lifecycle.run_scheduler(service, interval=timedelta(hours=1), stop_timeout=0.5).start()
    try:
        assert gated[0].entered.wait(timeout=15), "the idle timer never fired"
        stopping = time.monotonic()
        assert ticker.stop() is False, "a sweep was still in its side effect"
        assert 0.4 < time.monotonic() - stopping < 2
    finally:
        gated[0].release.set()
    # The sweep it left running finishes its suspend: nothing is half done.
    assert wait_for(lambda: service.get(row.id).state == "suspended", timeout=15)
    assert verify(service.store, service.policy) == []


def test_a_lazily_built_provider_is_built_once_however_many_threads_ask() -> None:
    from sandbox_lifecycle.adapters.composition.bootstrap import LazyProvider

    calls: list[int] = []
    release = threading.Barrier(THREADS)

    def factory() -> Any:
        calls.append(1)
        time.sleep(0.05)  # a real build (a Docker client, an S3 bucket check) takes this long or longer
        return object()

    lazy = LazyProvider("docker", factory)

    def build() -> Any:
        release.wait(10)
        return lazy.build()

    with ThreadPoolExecutor(THREADS) as pool:
        built = list(pool.map(lambda _: build(), range(THREADS)))
    assert len(calls) == 1
    assert len({id(b) for b in built}) == 1
