"""``_every`` on the process's ticker: it runs while the block runs, never after, and a block that ends
before the first run starts no thread."""

from __future__ import annotations

import threading
import time

from sandbox_lifecycle.core import inflight


def test_a_job_runs_every_interval_and_never_after_the_block() -> None:
    runs: list[float] = []
    with inflight._every(0.05, 10.0, lambda: runs.append(time.monotonic()) is None, "test"):
        time.sleep(0.32)
    seen = len(runs)
    assert 3 <= seen <= 7
    time.sleep(0.2)
    assert len(runs) == seen


def test_a_job_stops_at_its_bound_or_when_it_says_so() -> None:
    bounded: list[int] = []
    with inflight._every(0.05, 0.12, lambda: bounded.append(1) is None, "bounded"):
        time.sleep(0.4)
    assert 1 <= len(bounded) <= 3
    once: list[int] = []
    with inflight._every(0.05, 10.0, lambda: once.append(1) and False, "once"):
        time.sleep(0.3)
    assert once == [1]


def test_leaving_the_block_waits_for_a_run_in_flight() -> None:
    started, finished = threading.Event(), threading.Event()

    def slow() -> bool:
        started.set()
        time.sleep(0.2)
        finished.set()
        return True

    with inflight._every(0.01, 10.0, slow, "slow"):
        assert started.wait(5)
    assert finished.is_set()


def test_a_short_call_starts_no_thread() -> None:
    with inflight._every(0.01, 1.0, lambda: True, "warm"):
        time.sleep(0.05)  # the ticker exists from here on
    time.sleep(0.05)  # and the warm-up's runs have ended
    before = threading.active_count()
    with inflight._every(60.0, 120.0, lambda: True, "short"):
        during = threading.active_count()
    assert during <= before
