"""The timer ticker. APScheduler only wakes us up; the deadlines themselves live in the log's projections.

Every process runs the same ticker: an interval sweep (coalesced, one instance at a time) and an
exact ``date`` job for the next deadline when it falls before the next sweep. Both call
``fire_due``; optimistic concurrency on the log makes two tickers give one transition.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from sandbox_lifecycle.core.service import SandboxService

log = logging.getLogger("sandbox_lifecycle.scheduler")

NEXT_DEADLINE_JOB = "next-deadline"


class Ticker:
    def __init__(self, service: SandboxService, interval: timedelta, *, reconcile_every: int = 10) -> None:
        self.service = service
        self.interval = interval
        self.reconcile_every = reconcile_every
        self._sweeps = 0
        # No job store: a restart rebuilds everything from the database.
        self.scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1}
        )

    def start(self) -> None:
        self.scheduler.add_job(
            self.sweep,
            "interval",
            seconds=self.interval.total_seconds(),
            id="sweep",
            next_run_time=datetime.now(UTC),
        )
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)

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
            self.fire,
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
