"""Long commands on the real Docker engine, through the service on SQLite with the real clock.

A command in flight is activity: the idle timer must not suspend (and so kill) a sandbox while one of
its execs still runs, and must take over once it has ended. Streaming: a line printed mid-command reaches
the caller before the command ends; a timeout keeps what was printed before it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import HEARTBEAT_REASON, SandboxService, SweepReport
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from tests.support.fixtures.providers import docker_provider, new_deployment, remove_docker_sandboxes

pytestmark = pytest.mark.docker

IDLE = timedelta(seconds=3)
POLICY = Policy(idle_timeout=IDLE, retention=timedelta(hours=1), lease=timedelta(minutes=10))


@dataclass
class Stack:
    store: SqlEventStore
    service: SandboxService


@pytest.fixture
def stack(docker_client: Any, clean_sqlite_url: str, tmp_path: Path) -> Iterator[Stack]:
    deployment = new_deployment()
    store = open_store(clean_sqlite_url)
    provider = docker_provider(docker_client, tmp_path / "snapshots", deployment)
    try:
        yield Stack(store, SandboxService(store, provider, policy=POLICY))
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])
        store.close()


def _sweep_at(service: SandboxService, at: float, reports: list[SweepReport]) -> threading.Thread:
    def run() -> None:
        time.sleep(max(0.0, at - time.monotonic()))
        reports.append(service.sweep())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_exec_in_flight_keeps_the_sandbox_from_idling(stack: Stack) -> None:
    service = stack.service
    sid = service.create(DATA_APP).id
    reports: list[SweepReport] = []

    # The idle timeout is 3 s; the command runs 8 s; a sweep (another thread, as the ticker) comes at 5 s,
    # when the timer armed at the exec's start is 2 s overdue unless the running exec counts as activity.
    started = time.monotonic()
    sweeper = _sweep_at(service, started + 5, reports)
    result = service.exec(sid, ["sh", "-c", "sleep 8; exit 7"], timeout=30)
    took = time.monotonic() - started
    sweeper.join(30)

    assert result.exit_code == 7 and took >= 8
    assert len(reports) == 1
    assert service.get(sid).state == lc.IDLE
    kinds = [h.type for h in service.history(sid)]
    assert "IdleTimeoutElapsed" not in kinds and "SuspendRequested" not in kinds
    # The history stays readable: about one record per interval (1 s here), not one per poll.
    beats = [h for h in service.history(sid) if h.type == "ActivityRecorded" and h.reason == HEARTBEAT_REASON]
    assert 4 <= len(beats) <= 10, beats

    # Once the command has ended the beats stop, and the idle timer takes over.
    time.sleep(IDLE.total_seconds() + 1.0)
    service.sweep()
    assert service.get(sid).state == lc.SUSPENDED
    assert verify(stack.store, POLICY) == []


def test_a_line_reaches_on_stdout_before_the_command_ends(stack: Stack) -> None:
    service = stack.service
    sid = service.create(DATA_APP).id
    arrivals: list[tuple[float, bytes]] = []

    result = service.exec(
        sid,
        ["sh", "-c", "echo a; sleep 2; echo b"],
        timeout=30,
        on_stdout=lambda chunk: arrivals.append((time.monotonic(), chunk)),
    )
    ended = time.monotonic()

    assert result.exit_code == 0 and result.stdout == "a\nb\n"
    assert b"".join(c for _, c in arrivals) == b"a\nb\n"
    first_at = next(t for t, c in arrivals if c.startswith(b"a"))
    assert ended - first_at >= 1.5
