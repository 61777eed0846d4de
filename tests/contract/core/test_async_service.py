"""AsyncSandboxService: the sync service's verbs, awaitable, never blocking the event loop.

Real components only: the SQL event store on SQLite, the real Docker provider on the local engine, the
real E2B provider (the e2b SDK) against the loopback E2B server. Each test runs its own event loop with
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import sandbox_lifecycle
from sandbox_lifecycle import AsyncSandboxService, AsyncTurnHandle
from sandbox_lifecycle.core.ports import SandboxProvider
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.e2b import API_KEY, fake_env
from tests.support.fixtures.providers import (
    LABEL_DEPLOYMENT,
    PROVIDER_PARAMS,
    docker_provider,
    e2b_provider,
    new_deployment,
    remove_docker_sandboxes,
)
from tests.support.history import lifecycle_types

T = TypeVar("T")

TICK = 0.05
# No timer fires on its own while a test runs, unless the test asks for one.
POLICY = Policy(idle_timeout=timedelta(minutes=10))


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


# The loopback E2B server in a process of its own, for the tick measurements: in this process its
# request threads (and the fork of every command it runs) would compete with the event loop for the GIL
# and the CPU, and the test would measure the fake instead of the service.
_SERVER = """
import sys
from pathlib import Path
from tests.support.fake_e2b import FakeE2B
fake = FakeE2B(sys.argv[1], Path(sys.argv[2]))
fake.start()
print(fake.url, flush=True)
sys.stdin.read()  # until the test closes our stdin
fake.stop()
"""


@contextlib.contextmanager
def e2b_server_process(workdir: Path) -> Iterator[str]:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, API_KEY, str(workdir)],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server stops, killing every command it still runs
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class _Url:
    """What e2b_provider needs of a fake: its URL."""

    def __init__(self, url: str) -> None:
        self.url = url


class World:
    def __init__(self, name: str, service: SandboxService, running: Callable[[], list[Any]]) -> None:
        self.name = name
        self.service = service
        # The provider instances of this test that are running right now.
        self.running = running


@pytest.fixture(params=PROVIDER_PARAMS)
def world(request: pytest.FixtureRequest, tmp_path: Path, clean_sqlite_url: str) -> Iterator[World]:
    deployment = new_deployment()
    store = open_store(clean_sqlite_url)
    if request.param == "e2b":
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for name in ("E2B_DEBUG", "E2B_HTTP_VERSION", "E2B_DOMAIN", "E2B_API_URL", "E2B_SANDBOX_URL"):
            monkeypatch.delenv(name, raising=False)  # as in fake_e2b: none may steer the SDK elsewhere
        with e2b_server_process(tmp_path / "e2b") as url:
            provider = e2b_provider(_Url(url), deployment)
            service = SandboxService(store, provider, policy=POLICY)
            yield World(
                "e2b", service, lambda: [i for i in provider.list_instances() if i.status == "running"]
            )
            store.close()
        return
    client = request.getfixturevalue("docker_engine")
    provider = docker_provider(client, tmp_path / "snapshots", deployment)
    # Up already, as in a deployment that has run a sandbox before: the timed turns below do not wait
    # for the egress container's first start.
    provider.network.ensure_egress()  # type: ignore[attr-defined]
    service = SandboxService(store, provider, policy=POLICY)
    try:
        yield World(
            "docker",
            service,
            # Sandbox containers only (the deployment's egress container carries no "managed" label).
            lambda: client.containers.list(
                filters={"label": [f"{LABEL_DEPLOYMENT}={deployment}", "sandbox-lifecycle.managed=1"]}
            ),
        )
    finally:
        store.close()
        remove_docker_sandboxes(client, deployments=[deployment])


def conversation() -> str:
    return f"conv-{uuid.uuid4().hex[:8]}"


async def ticking(work: Awaitable[T]) -> tuple[T, float, float]:
    """Run ``work`` while a 50 ms ticker runs on the same loop: (result, ticks seen / expected, max gap)."""
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        for _ in range(100_000):  # bounded; ends when the work does
            if done.is_set():
                return
            await asyncio.sleep(TICK)
            ticks.append(time.monotonic())

    # A full garbage collection stops every thread, the loop's included, for as long as it walks the
    # heap: here the whole test session's (~150,000 objects, measured 0.2-0.4 s on a loaded two-core
    # machine). That pause is the collector's, not a blocking call, so the heap the session built so far
    # is frozen out of collections while measuring.
    gc.collect()
    gc.freeze()
    started = time.monotonic()
    task = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        done.set()
        await task
        gc.unfreeze()
    elapsed = time.monotonic() - started
    stamps = [started, *ticks]
    gap = max((b - a for a, b in itertools.pairwise(stamps)), default=elapsed)
    return result, len(ticks) / (elapsed / TICK), gap


# ------------------------------------------------------------------------------- the acceptance


def test_a_turn_with_a_three_second_exec_never_blocks_the_loop(world: World) -> None:
    async def main() -> tuple[Any, float, float]:
        async with AsyncSandboxService(world.service, max_workers=4) as service:

            async def turn() -> tuple[Any, float, str]:
                async with service.turn(conversation(), "data-app") as sbx:
                    assert isinstance(sbx, AsyncTurnHandle)
                    await sbx.write_file("hello.txt", "from the loop")
                    started = time.monotonic()
                    result = await sbx.exec("sleep 3; cat hello.txt", timeout=60)
                    took = time.monotonic() - started
                    assert await sbx.read_file("hello.txt") == b"from the loop"
                    return result, took, sbx.id

            return await ticking(turn())

    (result, took, sid), ratio, gap = asyncio.run(main())
    print(f"{world.name}: tick ratio {ratio:.3f}, longest gap {gap * 1000:.0f} ms, exec {took:.2f} s")
    assert result.exit_code == 0 and result.stdout == "from the loop"
    assert took >= 3.0
    assert ratio >= 0.9, f"only {ratio:.0%} of the loop's ticks happened during the turn"
    assert gap < 0.5
    assert world.service.get(sid).state == "suspended"
    assert world.running() == []


def test_the_tick_measure_sees_a_blocked_loop(fake_e2b: FakeE2B, clean_sqlite_url: str) -> None:
    """The control: the same measure, with the sync exec called on the loop, must fail the bar above."""
    service = SandboxService(open_store(clean_sqlite_url), e2b_provider(fake_e2b, new_deployment()))
    row = service.create("data-app")

    async def blocking() -> Any:
        return service.exec(row.id, ["sleep", "1"], timeout=30)

    _, ratio, gap = asyncio.run(ticking(blocking()))
    assert ratio < 0.5 and gap >= 0.9


def test_execs_of_many_tasks_run_at_once(fake_e2b: FakeE2B, clean_sqlite_url: str) -> None:
    sync = SandboxService(open_store(clean_sqlite_url), e2b_provider(fake_e2b, new_deployment()))
    rows = [sync.create("data-app") for _ in range(8)]

    async def main() -> float:
        async with AsyncSandboxService(sync, max_workers=8) as service:
            started = time.monotonic()
            results = await asyncio.gather(*(service.exec(r.id, ["sleep", "1"], timeout=30) for r in rows))
            assert [r.exit_code for r in results] == [0] * 8
            return time.monotonic() - started

    took = asyncio.run(main())
    assert took < 4, f"8 one-second execs took {took:.1f}s: they did not run concurrently"


# ------------------------------------------------------------------------------- cancellation


def test_a_cancelled_turn_still_suspends_and_its_exec_ends_with_it(world: World) -> None:
    ran: list[str] = []

    async def main() -> float:
        service = AsyncSandboxService(world.service, max_workers=4)
        with pytest.raises(TimeoutError):
            # Long enough for the turn to open (a network and a container on a loaded Docker host).
            async with asyncio.timeout(6), service.turn(conversation(), "data-app") as sbx:
                ran.append(sbx.id)
                await sbx.exec(["sleep", "60"], timeout=120)
        # The exec's worker thread is released once the sandbox it ran in is suspended, not after 60 s.
        closing = time.monotonic()
        await asyncio.wait_for(service.aclose(), timeout=30)
        return time.monotonic() - closing

    closing = asyncio.run(main())
    assert len(ran) == 1
    types = lifecycle_types(world.service.history(ran[0]))
    assert types[-2:] == ["SuspendRequested", "Suspended"]
    assert world.service.get(ran[0]).state == "suspended"
    assert world.running() == []
    assert closing < 30
    assert verify(world.service.store, world.service.policy) == []


def test_execs_still_running_never_delay_a_turns_suspend(fake_e2b: FakeE2B, clean_sqlite_url: str) -> None:
    """One thread per pool: a cancelled exec holds the exec pool's, the suspend must not wait for it."""
    sync = SandboxService(
        open_store(clean_sqlite_url), e2b_provider(fake_e2b, new_deployment()), policy=POLICY
    )

    async def main() -> tuple[str, float]:
        async with AsyncSandboxService(sync, max_workers=1) as service:
            async with service.turn(conversation(), "data-app") as sbx:
                ref = (await service.get(sbx.id)).provider_ref or ""
                running = asyncio.create_task(sbx.exec(["sleep", "60"], timeout=120))
                for _ in range(200):  # 10 s at most for the command to start
                    if fake_e2b.process_count(ref):
                        break
                    await asyncio.sleep(0.05)
                assert fake_e2b.process_count(ref) == 1
                running.cancel()
                leaving = time.monotonic()
            took = time.monotonic() - leaving
            with pytest.raises(asyncio.CancelledError):
                await running
            # The handle outlives its block only to refuse: an exec now would resume the sandbox.
            with pytest.raises(RuntimeError, match="has ended"):
                await sbx.exec(["true"])
            return sbx.id, took

    sid, took = asyncio.run(main())
    assert took < 15, f"the suspend waited {took:.1f}s for an exec's thread"
    assert sync.get(sid).state == "suspended"
    assert lifecycle_types(sync.history(sid))[-2:] == ["SuspendRequested", "Suspended"]


class GatedCreate:
    """The real provider, with create held until ``release`` is set."""

    def __init__(self, inner: SandboxProvider) -> None:
        self._inner = inner
        self.name = inner.name
        self.entered = threading.Event()
        self.release = threading.Event()

    def create(self, sandbox_id: str, kind: str) -> str:
        self.entered.set()
        self.release.wait(timeout=30)
        return self._inner.create(sandbox_id, kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_turn_cancelled_while_it_opens_is_closed_before_the_cancellation_propagates(
    fake_e2b: FakeE2B, clean_sqlite_url: str
) -> None:
    provider = GatedCreate(e2b_provider(fake_e2b, new_deployment()))
    sync = SandboxService(open_store(clean_sqlite_url), provider, policy=POLICY)
    body_ran = False
    conv = conversation()

    async def turn(service: AsyncSandboxService) -> None:
        nonlocal body_ran
        async with service.turn(conv, "data-app"):
            body_ran = True

    async def main() -> None:
        async with AsyncSandboxService(sync, max_workers=2) as service:
            task = asyncio.create_task(turn(service))
            assert await asyncio.to_thread(provider.entered.wait, 15)
            task.cancel()
            await asyncio.sleep(0.3)
            # The turn is half open in its thread: the task waits for it instead of abandoning it.
            assert not task.done()
            provider.release.set()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=30)

    asyncio.run(main())
    assert not body_ran
    (row,) = sync.list()
    assert row.conversation_id == conv
    assert row.state == "suspended"
    assert lifecycle_types(sync.history(row.id))[-2:] == ["SuspendRequested", "Suspended"]
    assert [s for s in fake_e2b.sandboxes() if s.state == "running"] == []


def test_an_error_in_the_body_propagates_and_the_turn_suspends(
    fake_e2b: FakeE2B, clean_sqlite_url: str
) -> None:
    sync = SandboxService(open_store(clean_sqlite_url), e2b_provider(fake_e2b, new_deployment()))
    seen: list[str] = []

    async def main() -> None:
        async with AsyncSandboxService(sync) as service:
            with pytest.raises(ValueError, match="agent failed"):
                async with service.turn(conversation(), "data-app") as sbx:
                    seen.append(sbx.id)
                    raise ValueError("agent failed")

    asyncio.run(main())
    assert sync.get(seen[0]).state == "suspended"


# ----------------------------------------------------------------------------- the public surface


def test_every_verb_of_the_sync_service_is_awaitable_with_the_same_parameters() -> None:
    # `load` returns the domain's internal state and `drive` sequences a side effect: not part of the
    # public surface; `sandbox_id_for_key` is a pure function. `turn` and `exec_stream` return objects
    # (an async context manager, an async iterator), and so does `events` (an async iterator): checked
    # for their parameters below. `attach_observer` is set-up, done once before the service is shared
    # (on `service.sync`).
    sync_verbs = {
        name for name, _ in inspect.getmembers(SandboxService, inspect.isfunction) if not name.startswith("_")
    } - {"load", "turn", "drive", "sandbox_id_for_key", "exec_stream", "events", "attach_observer"}
    async_verbs = {
        name
        for name, fn in inspect.getmembers(AsyncSandboxService, inspect.iscoroutinefunction)
        if not name.startswith("_") and name != "aclose"
    }
    assert async_verbs == sync_verbs
    for name in sorted(sync_verbs | {"turn", "exec_stream", "events"}):
        want = inspect.signature(getattr(SandboxService, name)).parameters
        got = inspect.signature(getattr(AsyncSandboxService, name)).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == [
            (p.name, p.kind, p.default) for p in want.values()
        ], name


def test_connect_async_runs_every_verb_from_the_environment(
    fake_e2b: FakeE2B, clean_sqlite_url: str, tmp_path: Path
) -> None:
    env = {
        **fake_env(fake_e2b),
        "SANDBOX_PROVIDER": "e2b",
        "SANDBOX_DATABASE_URL": clean_sqlite_url,
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_DEPLOYMENT": new_deployment(),
    }

    async def main() -> None:
        async with sandbox_lifecycle.connect_async(env) as service:
            assert isinstance(service, sandbox_lifecycle.AsyncSandboxService)
            row = await service.create("data-app", "c-1")
            assert (await service.get(row.id)).state == "idle"
            await service.write_file(row.id, "a.txt", b"one")
            assert await service.read_file(row.id, "a.txt") == b"one"
            assert (await service.exec(row.id, ["cat", "a.txt"])).stdout == "one"
            await service.touch(row.id)
            assert (await service.suspend(row.id)).state == "suspended"
            assert (await service.resume(row.id)).state == "idle"
            assert [r.id for r in await service.list("idle")] == [row.id]
            report = await service.sweep()
            assert report.errors == []
            assert (await service.fire_due()).fired == []
            assert (await service.reconcile()).errors == []
            assert (await service.destroy(row.id)).state == "expired"
            types = lifecycle_types(await service.history(row.id))
            assert types[:2] == ["CreationRequested", "Created"] and types[-1] == "Destroyed"

    asyncio.run(main())


def test_the_scheduler_runs_in_an_asyncio_lifespan(fake_e2b: FakeE2B, clean_sqlite_url: str) -> None:
    sync = SandboxService(
        open_store(clean_sqlite_url),
        e2b_provider(fake_e2b, new_deployment()),
        policy=Policy(idle_timeout=timedelta(seconds=1)),
    )

    async def main() -> Any:
        async with AsyncSandboxService(sync) as service:
            row = await service.create("data-app")
            async with sandbox_lifecycle.run_scheduler(service, interval=timedelta(hours=1)) as ticker:
                assert ticker.running
                for _ in range(300):  # 15 s at most
                    if (await service.get(row.id)).state == "suspended":
                        break
                    await asyncio.sleep(0.05)
            assert not ticker.running
            return await service.get(row.id)

    assert asyncio.run(main()).state == "suspended"


# -------------------------------------------------------------------------------------- streaming


def test_async_streaming_delivers_chunks_as_they_come_without_blocking_the_loop(world: World) -> None:
    async def main() -> tuple[Any, float, float]:
        async with AsyncSandboxService(world.service, max_workers=4) as service:

            async def turn() -> Any:
                async with service.turn(conversation(), "data-app") as sbx:
                    # The iterator form: the 'a' arrives while the command still sleeps.
                    arrivals: list[tuple[float, str, bytes]] = []
                    stream = sbx.exec_stream("echo a; sleep 2; echo b >&2; exit 3")
                    async for name, chunk in stream:
                        arrivals.append((time.monotonic(), name, chunk))
                    ended = time.monotonic()
                    assert stream.result.exit_code == 3
                    assert [(n, c) for _, n, c in arrivals] == [("stdout", b"a\n"), ("stderr", b"b\n")]
                    assert ended - arrivals[0][0] >= 1.5

                    # Callbacks: plain functions and coroutine functions, both run on the loop.
                    loop_thread = threading.get_ident()
                    out: list[bytes] = []
                    err: list[bytes] = []

                    def on_out(chunk: bytes) -> None:
                        assert threading.get_ident() == loop_thread
                        out.append(chunk)

                    async def on_err(chunk: bytes) -> None:
                        await asyncio.sleep(0)
                        err.append(chunk)

                    result = await sbx.exec(
                        ["sh", "-c", "echo x; echo y >&2"], on_stdout=on_out, on_stderr=on_err
                    )
                    assert (result.stdout, b"".join(out), b"".join(err)) == ("x\n", b"x\n", b"y\n")
                    with pytest.raises(sandbox_lifecycle.CommandFailed) as failed:
                        await service.exec(sbx.id, "echo nope >&2; exit 2", check=True)
                    assert (failed.value.exit_code, failed.value.stderr) == (2, "nope\n")
                    return sbx.id

            return await ticking(turn())

    sid, ratio, gap = asyncio.run(main())
    assert ratio >= 0.9 and gap < 0.5, (ratio, gap)
    assert world.service.get(sid).state == "suspended"
