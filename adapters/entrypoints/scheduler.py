"""The timer ticker. APScheduler only wakes us up; the deadlines themselves live in the log's projections.

Every process runs the same ticker: an interval sweep (coalesced, one instance at a time) and an
exact ``date`` job for the next deadline when it falls before the next sweep. Both call
``fire_due``; optimistic concurrency on the log makes two tickers give one transition.

Entry points: ``sandboxctl scheduler`` (``run_forever``: foreground, stops on SIGTERM/SIGINT), and
``run_scheduler`` for an application that embeds the module (``with`` in a sync app, ``async with`` in an
asyncio app's lifespan). Any number of replicas may run it; the log keeps each transition exactly-once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import FrameType, TracebackType

from apscheduler.schedulers.background import BackgroundScheduler

from sandbox_lifecycle.core.async_service import AsyncSandboxService
from sandbox_lifecycle.core.service import SandboxService

log = logging.getLogger("sandbox_lifecycle.scheduler")

NEXT_DEADLINE_JOB = "next-deadline"
# How long leaving `run_scheduler` waits for a sweep in flight: one side effect (a snapshot upload, a
# pause) takes seconds; the ones still running after this finish in the background, or a lease re-drives
# them if the process exits first.
DEFAULT_STOP_TIMEOUT = 10.0


class Ticker:
    def __init__(self, service: SandboxService, interval: timedelta, *, reconcile_every: int = 10) -> None:
        self.service = service
        self.interval = interval
        self.reconcile_every = reconcile_every
        self._sweeps = 0
        # Jobs running now, so stop() can wait for them with a bound (APScheduler's own wait has none).
        self._busy = 0
        self._idle = threading.Condition()
        # No job store: a restart rebuilds everything from the database.
        self.scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1}
        )

    def start(self) -> None:
        self.scheduler.add_job(
            self._tracked(self.sweep),
            "interval",
            seconds=self.interval.total_seconds(),
            id="sweep",
            next_run_time=datetime.now(UTC),
        )
        self.scheduler.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop ticking; wait for a job in flight, at most ``timeout`` seconds (None: until it ends).

        Returns whether nothing was left running. Idempotent.
        """
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        with self._idle:
            done = self._idle.wait_for(lambda: self._busy == 0, timeout)
        if not done:
            log.warning("scheduler stopped with a sweep still finishing its side effects")
        return done

    def _tracked(self, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self._idle:
                self._busy += 1
            try:
                job()
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        return run

    def fire(self) -> None:
        try:
            report = self.service.fire_due()
            for item in report.fired + report.recovered:
                log.info("fired %s", item)
            for err in report.errors:
                log.warning("%s", err)
        except Exception:
            log.exception("firing due timers failed; the next sweep retries")
        self._arm_next()

    def sweep(self) -> None:
        self._sweeps += 1
        self.fire()
        try:
            # The warm pools are topped up (or drained) here, between turns, never on a turn's path.
            for item in self.service.maintain_pools():
                log.info("warm pool: %s", item)
        except Exception:
            log.exception("warm pool upkeep failed; the next sweep retries")
        if self._sweeps % self.reconcile_every == 1:
            try:
                report = self.service.reconcile()
                for item in report.removed + report.recovered:
                    log.info("reconcile: %s", item)
            except Exception:
                log.exception("reconcile failed; the next sweep retries")

    def _arm_next(self) -> None:
        """An exact wake-up for a deadline due before the next interval sweep."""
        try:
            due = self.service.store.next_deadline()
        except Exception:
            log.exception("reading the next deadline failed")
            return
        now = datetime.now(UTC)
        if due is None or due > now + self.interval:
            return
        self.scheduler.add_job(
            self._tracked(self.fire),
            "date",
            run_date=max(due, now) + timedelta(milliseconds=5),
            id=NEXT_DEADLINE_JOB,
            replace_existing=True,
        )


def run_forever(service: SandboxService, interval: timedelta) -> None:
    ticker = Ticker(service, interval)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the scheduler", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ticker.start()
    print(
        f"scheduler running (sweep every {interval.total_seconds():g}s); SIGTERM or Ctrl-C stops it",
        flush=True,
    )
    stop.wait()
    ticker.stop()
    print("scheduler stopped", flush=True)


class Scheduler:
    """The ticker inside an application: a background thread, started and stopped with the app.

    ``with run_scheduler(service):`` in a sync application; ``async with run_scheduler(service):`` in an
    asyncio one (e.g. a lifespan), where starting and stopping run in a worker thread so the loop never
    waits on them. Stopping waits at most ``stop_timeout`` seconds for a sweep in flight.
    """

    def __init__(self, service: SandboxService, interval: timedelta, *, stop_timeout: float) -> None:
        if interval <= timedelta(0):
            raise ValueError(f"the sweep interval must be positive, not {interval}")
        self.interval = interval
        self.stop_timeout = stop_timeout
        self._ticker = Ticker(service, interval)
        self._started = False

    @property
    def running(self) -> bool:
        return bool(self._ticker.scheduler.running)

    def start(self) -> Scheduler:
        if self._started:
            raise RuntimeError("a Scheduler runs once; make another with run_scheduler()")
        self._started = True
        self._ticker.start()
        log.info("scheduler started (sweep every %gs)", self.interval.total_seconds())
        return self

    def stop(self) -> bool:
        """Stop; True if no sweep was left running after ``stop_timeout``."""
        done = self._ticker.stop(self.stop_timeout)
        log.info("scheduler stopped")
        return done

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Scheduler:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def run_scheduler(
    service: SandboxService | AsyncSandboxService,
    *,
    interval: timedelta | None = None,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> Scheduler:
    """A :class:`Scheduler` for ``service``; without ``interval``, ``SANDBOX_SWEEP_INTERVAL_MS`` decides."""
    if isinstance(service, AsyncSandboxService):
        # The ticker runs in its own threads: it drives the sync service directly.
        service = service.sync
    if interval is None:
        # why here: a caller that passes its own settings never parses the environment
        from sandbox_lifecycle.adapters.composition.settings import Settings

        interval = Settings.from_env(environ).sweep_interval
    return Scheduler(service, interval, stop_timeout=stop_timeout)
