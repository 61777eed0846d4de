"""Name lookups of the egress proxy: on threads of its own, bounded, each sandbox within its share.

``getaddrinfo`` blocks, so a lookup runs on a thread. Once they ran in the event loop's default pool
(min(32, cores + 4) threads) shared by every sandbox: sandboxes asking for names that hang (a wildcard
in an allow-list lets a sandbox pick any name under it) held every thread, and a bystander's lookup
queued behind them for their resolver's whole timeout. Here:

- a sandbox (a *share*) runs at most ``per_share`` lookups at once; its further ones wait for its own
  to end and never take a thread another sandbox could use;
- at most ``total`` lookups run at once, all shares together (the egress container's pids limit);
- a freed thread goes to the waiting share running the fewest lookups (the earliest asked among
  equals), so a sandbox with none running is served next: it waits behind others only while more
  than ``total / per_share`` sandboxes are all busy at once, and then only until the first thread frees;
- a caller waits at most ``timeout_s``, queueing included (TimeoutError). A blocked ``getaddrinfo``
  cannot be stopped, so a lookup that overruns keeps its thread until it returns, and counts against its
  own sandbox's share until then: the sandbox asking for hanging names is the one that waits.

Standard library only: it runs inside the egress container.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class _Job:
    share: str
    work: Callable[[], Any]
    future: asyncio.Future[Any]
    asked: int  # the order it was asked in


class FairLookups:
    """Runs blocking work (a name lookup) on a thread of its own, fairly among shares (sandboxes).

    Used from one event loop; only :meth:`run` is public."""

    def __init__(self, *, per_share: int = 4, total: int = 64, timeout_s: float = 5.0) -> None:
        if per_share < 1 or total < per_share or timeout_s <= 0:
            raise ValueError("need 1 <= per_share <= total and timeout_s > 0")
        self.per_share = per_share
        self.total = total
        self.timeout_s = timeout_s
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[_Job]] = {}
        self._busy = 0
        self._order = itertools.count()

    def running(self) -> dict[str, int]:
        """Lookups running now, by share (those overrunning their caller's timeout included)."""
        return dict(self._running)

    def waiting(self) -> int:
        return sum(len(jobs) for jobs in self._waiting.values())

    async def run(self, share: str, work: Callable[[], T]) -> T:
        """``work()`` on a lookup thread of ``share``; TimeoutError after ``timeout_s`` (its thread, if it
        started, runs on and is counted until it ends). RuntimeError when no thread could be started."""
        loop = asyncio.get_running_loop()
        job = _Job(share, work, loop.create_future(), next(self._order))
        self._waiting.setdefault(share, deque()).append(job)
        self._dispatch(loop)
        try:
            async with asyncio.timeout(self.timeout_s):
                result: T = await job.future
                return result
        finally:
            # Given up (a timeout, or its connection ended) before it started: it never will.
            queued = self._waiting.get(share)
            if queued is not None and job in queued:
                queued.remove(job)
                if not queued:
                    del self._waiting[share]

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._busy < self.total:
            job = self._next()
            if job is None:
                return
            self._start(loop, job)

    def _next(self) -> _Job | None:
        """The next job to start: of the waiting share running the fewest, the earliest asked."""
        best: tuple[int, int, str] | None = None
        for share, jobs in self._waiting.items():
            running = self._running.get(share, 0)
            if running < self.per_share and (best is None or (running, jobs[0].asked) < best[:2]):
                best = (running, jobs[0].asked, share)
        if best is None:
            return None
        queued = self._waiting[best[2]]
        job = queued.popleft()
        if not queued:
            del self._waiting[best[2]]
        return job

    def _start(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        self._running[job.share] = self._running.get(job.share, 0) + 1
        self._busy += 1
        thread = threading.Thread(target=self._work, args=(loop, job), name="egress-lookup", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # can't start new thread: the pids limit; this lookup fails alone
            self._ended(job)
            if not job.future.done():
                job.future.set_exception(RuntimeError(f"no thread for a name lookup: {exc}"))

    def _work(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = job.work()
        except BaseException as exc:  # handed to the caller, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has ended: nobody is waiting any more
            loop.call_soon_threadsafe(self._done, loop, job, result, error)

    def _done(
        self, loop: asyncio.AbstractEventLoop, job: _Job, result: Any, error: BaseException | None
    ) -> None:
        self._ended(job)
        if not job.future.done():  # not given up on by its caller
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
        self._dispatch(loop)

    def _ended(self, job: _Job) -> None:
        self._busy -= 1
        left = self._running[job.share] - 1
        if left:
            self._running[job.share] = left
        else:
            del self._running[job.share]
