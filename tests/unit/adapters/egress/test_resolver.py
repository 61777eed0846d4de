"""The proxy's lookup threads (resolver.py): each share within its own bound, all of them within the
total, a freed thread to the waiting share running the fewest, callers timed out. Work here blocks on
events the test sets, never on the clock; every wait is bounded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from sandbox_lifecycle.adapters.egress.resolver import FairLookups

WAIT_S = 5.0  # the bound of every wait here; reached only when a test fails


class Gates:
    """Work items that block until released, recording which ran in which order."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def work(
        self, name: str, result: object = None, error: BaseException | None = None
    ) -> Callable[[], object]:
        event = self._events.setdefault(name, threading.Event())

        def run() -> object:
            with self._lock:
                self.started.append(name)
            assert event.wait(WAIT_S), f"{name} was never released"
            if error is not None:
                raise error
            return result if result is not None else name

        return run

    def release(self, *names: str) -> None:
        for name in names:
            self._events.setdefault(name, threading.Event()).set()

    def release_all(self) -> None:
        for event in list(self._events.values()):
            event.set()


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.005)


def _run(test: Callable[[], object]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("per_share", "total", "timeout_s"), [(0, 4, 1.0), (5, 4, 1.0), (1, 4, 0.0), (1, 4, -1.0)]
)
def test_bounds_that_cannot_hold_are_refused(per_share: int, total: int, timeout_s: float) -> None:
    with pytest.raises(ValueError, match="per_share"):
        FairLookups(per_share=per_share, total=total, timeout_s=timeout_s)


def test_the_edges_of_the_bounds_are_taken() -> None:
    lookups = FairLookups(per_share=1, total=1, timeout_s=0.001)
    assert (lookups.per_share, lookups.total, lookups.timeout_s) == (1, 1, 0.001)
    default = FairLookups()
    assert (default.per_share, default.total, default.timeout_s) == (4, 64, 5.0)


def test_a_result_and_an_error_reach_the_caller_and_free_the_thread() -> None:
    async def test() -> None:
        lookups = FairLookups(per_share=1, total=1, timeout_s=WAIT_S)
        assert await lookups.run("a", lambda: ["192.0.2.1"]) == ["192.0.2.1"]
        with pytest.raises(OSError, match="no such name"):
            await lookups.run("a", _raises(OSError("no such name")))
        assert await lookups.run("a", lambda: 7) == 7  # the one thread was freed each time
        assert lookups.running() == {} and lookups.waiting() == 0

    _run(test)


def _raises(error: BaseException) -> Callable[[], object]:
    def run() -> object:
        raise error

    return run


def test_a_share_runs_at_most_its_bound_and_its_next_one_waits_for_its_own() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=2, total=8, timeout_s=WAIT_S)
        calls = [asyncio.create_task(lookups.run("a", gates.work(f"a{n}"))) for n in range(3)]
        await _until(lambda: len(gates.started) == 2)
        assert lookups.running() == {"a": 2} and lookups.waiting() == 1
        # Another share is not held up by the waiting one: threads are free for it.
        other = asyncio.create_task(lookups.run("b", gates.work("b0")))
        await _until(lambda: "b0" in gates.started)
        assert lookups.running() == {"a": 2, "b": 1}
        gates.release("b0")
        assert await other == "b0"
        assert lookups.running() == {"a": 2}
        gates.release(gates.started[0])
        await _until(lambda: len(gates.started) == 4)  # a's third starts once one of its own ended
        gates.release_all()
        assert sorted(await asyncio.gather(*calls)) == ["a0", "a1", "a2"]
        assert lookups.running() == {} and lookups.waiting() == 0

    _run(test)


def test_at_most_total_run_and_a_freed_thread_goes_to_the_share_running_fewest() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=3, total=3, timeout_s=WAIT_S)
        busy = [asyncio.create_task(lookups.run("a", gates.work(f"a{n}"))) for n in range(3)]
        await _until(lambda: len(gates.started) == 3)
        # All threads are a's. a asks again first, b (running none) asks after it.
        later_a = asyncio.create_task(lookups.run("a", gates.work("a3")))
        await asyncio.sleep(0)
        late_b = asyncio.create_task(lookups.run("b", gates.work("b0")))
        await asyncio.sleep(0)
        assert lookups.waiting() == 2 and lookups.running() == {"a": 3}
        gates.release("a0")
        await _until(lambda: len(gates.started) == 4)
        assert gates.started[3] == "b0"  # b runs none: it goes first, though a asked earlier
        assert lookups.running() == {"a": 2, "b": 1}
        gates.release_all()
        await asyncio.gather(*busy, later_a, late_b)
        assert gates.started[4] == "a3"
        assert lookups.running() == {} and lookups.waiting() == 0

    _run(test)


def test_among_shares_running_as_many_the_earliest_asked_goes_first() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=1, total=1, timeout_s=WAIT_S)
        first = asyncio.create_task(lookups.run("x", gates.work("x0")))
        await _until(lambda: gates.started == ["x0"])
        waiting = []
        for share in ("c", "b", "a"):  # none running; asked in this order
            waiting.append(asyncio.create_task(lookups.run(share, gates.work(share))))
            await asyncio.sleep(0)
        gates.release("x0")
        await first
        await _until(lambda: len(gates.started) == 2)
        gates.release("c")
        await _until(lambda: len(gates.started) == 3)
        gates.release("b")
        await _until(lambda: len(gates.started) == 4)
        gates.release("a")
        await asyncio.gather(*waiting)
        assert gates.started == ["x0", "c", "b", "a"]

    _run(test)


def test_a_share_at_its_bound_does_not_block_others_queued_behind_it() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=1, total=2, timeout_s=WAIT_S)
        a0 = asyncio.create_task(lookups.run("a", gates.work("a0")))
        x0 = asyncio.create_task(lookups.run("x", gates.work("x0")))
        await _until(lambda: len(gates.started) == 2)
        a1 = asyncio.create_task(lookups.run("a", gates.work("a1")))  # a is at its bound
        await asyncio.sleep(0)
        b0 = asyncio.create_task(lookups.run("b", gates.work("b0")))
        await asyncio.sleep(0)
        gates.release("x0")
        await x0
        await _until(lambda: len(gates.started) == 3)
        assert gates.started[2] == "b0"  # the free thread skips a (at its bound) for b
        gates.release_all()
        await asyncio.gather(a0, a1, b0)

    _run(test)


def test_a_caller_gives_up_after_the_timeout_and_the_overrunning_lookup_keeps_its_share() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=1, total=4, timeout_s=0.05)
        with pytest.raises(TimeoutError):
            await lookups.run("a", gates.work("hangs"))
        # Still running (getaddrinfo cannot be stopped): it counts against a, so a's next one waits...
        assert lookups.running() == {"a": 1}
        with pytest.raises(TimeoutError):
            await lookups.run("a", gates.work("queued"))
        # ...and having given up, is not started later, nor left in the queue.
        assert lookups.waiting() == 0
        assert await lookups.run("b", lambda: "b") == "b"  # another share is served meanwhile
        gates.release("hangs")
        await _until(lambda: lookups.running() == {})
        assert await lookups.run("a", lambda: "again") == "again"
        assert gates.started == ["hangs"]

    _run(test)


def test_a_cancelled_caller_leaves_its_queued_lookup_out_and_other_queued_ones_in() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=1, total=1, timeout_s=WAIT_S)
        holder = asyncio.create_task(lookups.run("a", gates.work("a0")))
        await _until(lambda: gates.started == ["a0"])
        one = asyncio.create_task(lookups.run("b", gates.work("b0")))
        two = asyncio.create_task(lookups.run("b", gates.work("b1")))
        await asyncio.sleep(0)
        assert lookups.waiting() == 2
        one.cancel()
        with pytest.raises(asyncio.CancelledError):
            await one
        assert lookups.waiting() == 1
        gates.release_all()
        assert await holder == "a0" and await two == "b1"
        assert gates.started == ["a0", "b1"]

    _run(test)


def test_no_thread_to_be_had_fails_that_lookup_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    async def test() -> None:
        lookups = FairLookups(per_share=2, total=2, timeout_s=WAIT_S)

        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        with monkeypatch.context() as patched:
            patched.setattr(threading.Thread, "start", refuse)
            with pytest.raises(RuntimeError, match="no thread for a name lookup: can't start new thread"):
                await lookups.run("a", lambda: "never")
        assert lookups.running() == {} and lookups.waiting() == 0
        assert await lookups.run("a", lambda: "then") == "then"

    _run(test)


def test_a_lookup_ending_after_its_loop_is_dropped_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    gates = Gates()
    lookups = FairLookups(per_share=1, total=1, timeout_s=0.05)

    async def give_up() -> list[threading.Thread]:
        with pytest.raises(TimeoutError):
            await lookups.run("a", gates.work("late"))
        return [t for t in threading.enumerate() if t.name == "egress-lookup"]

    threads = asyncio.run(give_up())  # the loop ends with the lookup still running
    assert threads and all(t.daemon for t in threads)  # a hanging lookup never holds the exit up
    gates.release("late")
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(t.is_alive() for t in threads)
    assert failures == []  # its thread found the loop closed and ended without a trace


def test_a_share_whose_queued_lookup_gave_up_does_not_stall_the_next_share() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=1, total=1, timeout_s=0.5)
        holder = asyncio.create_task(lookups.run("x", gates.work("x0")))
        await _until(lambda: gates.started == ["x0"])
        with pytest.raises(TimeoutError):  # queued, given up: a has nothing waiting now
            await lookups.run("a", gates.work("a0"))
        with pytest.raises(TimeoutError):  # its thread runs on, holding the only one
            await holder
        other = asyncio.create_task(lookups.run("b", gates.work("b0")))
        await asyncio.sleep(0)
        gates.release("x0", "b0")
        assert await other == "b0"
        assert gates.started == ["x0", "b0"] and lookups.waiting() == 0

    _run(test)


def test_the_earliest_asked_goes_first_even_when_its_share_began_waiting_later() -> None:
    async def test() -> None:
        gates = Gates()
        lookups = FairLookups(per_share=2, total=2, timeout_s=WAIT_S)
        holders = [asyncio.create_task(lookups.run("x", gates.work(name))) for name in ("x0", "x1")]
        await _until(lambda: len(gates.started) == 2)
        waiting = []
        for share, name in (("c", "c0"), ("b", "b0"), ("c", "c1")):  # c waits first, c1 after b0
            waiting.append(asyncio.create_task(lookups.run(share, gates.work(name))))
            await asyncio.sleep(0)
        gates.release("x0")
        await _until(lambda: len(gates.started) == 3)
        gates.release("c0")  # c runs none again: c1 and b0 tie on that, and b0 was asked first
        await _until(lambda: len(gates.started) == 4)
        gates.release_all()
        await asyncio.gather(*holders, *waiting)
        assert gates.started[2:] == ["c0", "b0", "c1"]

    _run(test)
