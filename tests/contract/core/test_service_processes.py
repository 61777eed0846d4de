"""Background processes through the service: handles, activity while output moves, suspend records.

On the fake provider (its processes are real host processes) and every event store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.async_service import AsyncSandboxService
from sandbox_lifecycle.core.errors import ProcessNotFound, Unsupported
from sandbox_lifecycle.core.ports import EventStore, ProviderCapabilities
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    yield fake
    for ref in list(fake.background):
        fake._stop_processes(ref)


def test_a_turn_starts_waits_for_and_reads_a_background_process(service: SandboxService) -> None:
    with service.turn("conv-1", "data-app") as sbx:
        proc = sbx.start("echo built; echo warn >&2; exit 4")

        assert proc.wait(20) == 4
        logs = proc.logs()
        assert (logs.stdout, logs.stderr) == ("built\n", "warn\n")
        [listed] = sbx.processes()
        assert (listed.id, listed.running, listed.exit_code) == (proc.id, False, 4)
        assert service.process(sbx.id, proc.id).info.exit_code == 4


def test_kill_and_unknown_ids(service: SandboxService) -> None:
    row = service.create("data-app")
    proc = service.start(row.id, ["sleep", "60"])
    with pytest.raises(TimeoutError):
        proc.wait(0.2)

    proc.kill()

    assert proc.wait(10) == 137
    with pytest.raises(ProcessNotFound, match=f"no background process '0123456789abcde' in sandbox {row.id}"):
        service.process_logs(row.id, "0123456789abcde")


def test_output_that_moves_after_the_idle_cutoff_keeps_the_sandbox_awake(
    service: SandboxService, provider: FakeProvider, clock: Clock
) -> None:
    row = service.create("data-app")
    ref = service.get(row.id).provider_ref or ""
    clock.advance(minutes=31)
    # A background process printed a minute ago: the log knows nothing of it, the provider does.
    provider.activity[ref] = clock.now - timedelta(minutes=1)

    assert service.fire_due().fired == []

    assert service.get(row.id).state == lc.IDLE
    last = service.history(row.id)[-1]
    assert (last.type, last.reason, last.actor) == ("ActivityRecorded", "process_output", "scheduler")
    # Once the output stops moving, the timer suspends it as ever.
    clock.advance(minutes=31)
    assert service.fire_due().fired == [f"{row.id}:idle"]
    assert service.get(row.id).state == lc.SUSPENDED


def test_output_older_than_the_cutoff_is_not_activity(
    service: SandboxService, provider: FakeProvider, clock: Clock
) -> None:
    row = service.create("data-app")
    ref = service.get(row.id).provider_ref or ""
    provider.activity[ref] = clock.now
    clock.advance(minutes=31)

    assert service.fire_due().fired == [f"{row.id}:idle"]


def test_a_suspend_records_the_processes_it_stopped_for_the_next_turn(
    service: SandboxService, provider: FakeProvider
) -> None:
    with service.turn("conv-2", "data-app") as sbx:
        server = sbx.start(["sleep", "60"], cwd="/home/sandbox")
        done = sbx.start("true")
        done.wait(10)
        assert sbx.stopped_processes == ()
    hist = service.history(sbx.id)
    recorded = [h.data.get("running_processes") for h in hist if h.type in ("SuspendRequested", "Suspended")]
    expected = [{"id": server.id, "command": ["sleep", "60"], "cwd": "/home/sandbox"}]
    assert recorded == [expected, expected]
    assert provider.background == {}  # the suspend stopped it

    with service.turn("conv-2", "data-app") as again:
        [stopped] = again.stopped_processes
        assert (stopped.id, stopped.command, stopped.cwd, stopped.running) == (
            server.id,
            ("sleep", "60"),
            "/home/sandbox",
            False,
        )
        assert again.processes() == []
        restarted = again.start(list(stopped.command), cwd=stopped.cwd)
        assert [p.id for p in again.processes() if p.running] == [restarted.id]
    # This turn's suspend stopped the restarted one: the next turn sees it, not the first.
    with service.turn("conv-2", "data-app") as third:
        assert [p.id for p in third.stopped_processes] == [restarted.id]


def test_capabilities_the_provider_lacks_are_refused_clearly(service: SandboxService) -> None:
    row = service.create("data-app")
    with pytest.raises(Unsupported, match="fake provider does not support background processes that survive"):
        service.start(row.id, ["sleep", "1"], survive_suspend=True)
    assert service.url(row.id, 8080) == "http://127.0.0.1:8080"


def test_url_is_refused_without_the_ports_capability(store: EventStore, clock: Clock) -> None:
    class NoPorts(FakeProvider):
        capabilities = ProviderCapabilities("none", False, False, False)

    service = SandboxService(store, NoPorts(), policy=POLICY, clock=clock)
    row = service.create("data-app")

    with pytest.raises(Unsupported, match="url"):
        service.url(row.id, 8080)


def test_async_handles(service: SandboxService) -> None:
    async def main() -> tuple[int, str]:
        async with AsyncSandboxService(service) as aservice, aservice.turn("conv-3", "data-app") as sbx:
            proc = await sbx.start("echo async")
            code = await proc.wait(20)
            logs = await proc.logs()
            assert [p.id for p in await sbx.processes()] == [proc.id]
            return code, logs.stdout

    assert asyncio.run(main()) == (0, "async\n")
