"""E2B checkpoints and token-guarded ports against the real E2B cloud. Runs only when E2B_API_KEY is set;
needs the kind's template built and tagged (``python -m sandboxes.build_e2b_templates``). The same cases
as tests/unit/adapters/providers/e2b/test_checkpoints.py and test_preview.py, which run on the loopback
server; here a background process must also survive a checkpoint (E2B's full snapshot keeps memory,
which the loopback server cannot)."""

from __future__ import annotations

import dataclasses
import os
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

import pytest

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import InMemoryEventStore

pytestmark = [
    pytest.mark.e2b_live,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not os.environ.get("E2B_API_KEY"), reason="E2B_API_KEY is not set"),
]

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=1), lease=timedelta(minutes=10))


def live_service(checkpoints: bool) -> SandboxService:
    settings = dataclasses.replace(E2BSettings.from_env(os.environ), checkpoints=checkpoints)
    deployment = f"live-{uuid.uuid4().hex[:8]}"
    return SandboxService(InMemoryEventStore(), E2BProvider(settings, deployment=deployment), policy=POLICY)


def status(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of a GET (bounded: 10 s)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code
    except (urllib.error.URLError, OSError):
        return 0


def test_rewind_and_fork_restore_the_first_checkpoint_and_processes_survive() -> None:
    service = live_service(checkpoints=True)
    sid = service.create(DATA_APP).id
    try:
        service.write_file(sid, "app/a.txt", b"A")
        ticker = service.start(sid, ["bash", "-c", "while true; do date +%s; sleep 1; done"])
        service.suspend(sid)
        service.write_file(sid, "app/b.txt", b"B")
        assert ticker.id in {p.id for p in service.processes(sid) if p.running}
        service.suspend(sid)
        first, _ = service.checkpoints(sid)
        fork = service.fork(sid, at_version=first.version)
        try:
            service.rewind(sid, first.version)
            assert service.read_file(sid, "app/a.txt") == b"A"
            assert not service.exists(sid, "app/b.txt")
            assert service.read_file(fork.id, "app/a.txt") == b"A"
        finally:
            service.destroy(fork.id)
    finally:
        service.destroy(sid)


def test_a_port_answers_only_with_the_traffic_token() -> None:
    service = live_service(checkpoints=False)
    sid = service.create(DATA_APP).id
    try:
        service.write_file(sid, "index.html", b"hello\n")
        service.start(sid, ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"])
        preview = service.preview(sid, 8000)
        deadline = time.monotonic() + 60
        while status(preview.url, dict(preview.headers)) != 200:
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(1)
        assert status(preview.url, {}) == 403
        service.set_egress(sid, [], reason="closed")
        service.suspend(sid)
        service.resume(sid)
        assert service.preview(sid, 8000) == preview
    finally:
        service.destroy(sid)
