"""Background processes through the service on the real Docker engine, SQLite and the real clock.

A detached process counts as activity only while its output moves: the idle timer (3 s here) leaves a
sandbox whose process keeps printing, and suspends it once the output stops; the suspend records the
silent process it stopped, and the next turn lists it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fixtures.providers import docker_provider, new_deployment, remove_docker_sandboxes

IDLE = timedelta(seconds=3)
POLICY = Policy(idle_timeout=IDLE, retention=timedelta(hours=1), lease=timedelta(minutes=10))


@pytest.fixture
def docker_service(docker_client: Any, clean_sqlite_url: str, tmp_path: Path) -> Iterator[SandboxService]:
    deployment = new_deployment()
    store = open_store(clean_sqlite_url)
    try:
        yield SandboxService(
            store, docker_provider(docker_client, tmp_path / "snapshots", deployment), policy=POLICY
        )
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])
        store.close()


@pytest.mark.docker
def test_moving_output_is_activity_and_a_suspend_records_what_it_stopped(
    docker_service: SandboxService,
) -> None:
    service = docker_service
    sid = service.create(DATA_APP, "conv-bg").id
    ticker = service.start(sid, "while true; do echo tick; sleep 0.3; done")
    silent = service.start(sid, ["sleep", "300"], cwd="/home/sandbox")

    time.sleep(IDLE.total_seconds() + 0.5)  # the timer armed at the start is due now
    report = service.sweep()

    assert report.fired == [] and service.get(sid).state == lc.IDLE
    touch = service.history(sid)[-1]
    assert (touch.type, touch.reason) == ("ActivityRecorded", "process_output")

    ticker.kill()
    time.sleep(IDLE.total_seconds() + 0.5)  # nothing prints any more: the silent process is no activity
    report = service.sweep()

    assert report.fired == [f"{sid}:idle"]
    assert service.get(sid).state == lc.SUSPENDED
    expected = [{"id": silent.id, "command": ["sleep", "300"], "cwd": "/home/sandbox"}]
    recorded = [h.data.get("running_processes") for h in service.history(sid) if "Suspend" in h.type]
    assert recorded == [expected, expected]
    with service.turn("conv-bg", DATA_APP) as sbx:
        assert [(p.id, p.command) for p in sbx.stopped_processes] == [(silent.id, ("sleep", "300"))]
        assert sbx.processes() == []  # a new container: the suspend stopped them
    assert verify(service.store, service.policy) == []


def test_on_e2b_a_process_survives_the_turns_pause_and_serves_through_its_url(
    fake_e2b: Any, clean_sqlite_url: str
) -> None:
    import socket
    import urllib.request

    from tests.support.fixtures.providers import e2b_provider

    store = open_store(clean_sqlite_url)
    service = SandboxService(store, e2b_provider(fake_e2b, new_deployment()), policy=POLICY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": fake_e2b.proxy_url}))

    def get(url: str, headers: Mapping[str, str]) -> bytes | None:
        try:
            with opener.open(urllib.request.Request(url, headers=dict(headers)), timeout=5) as answer:
                return bytes(answer.read())
        except OSError:
            return None

    try:
        with service.turn("conv-e2b", DATA_APP) as sbx:
            sbx.write_file("index.html", "served\n")
            server = sbx.start(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"])
        assert service.get(sbx.id).state == lc.SUSPENDED
        with service.turn("conv-e2b", DATA_APP) as again:
            assert again.stopped_processes == ()  # E2B's pause kept it: nothing to restart
            assert [p.running for p in again.processes() if p.id == server.id] == [True]
            url = again.url(port)
            assert url == f"http://{port}-{service.get(sbx.id).provider_ref}.{fake_e2b.domain}"
            # Public traffic is off: the port answers only a request carrying the traffic token.
            preview = service.preview(sbx.id, port)
            assert preview.url == url and preview.headers
            for _ in range(100):  # bounded: the server may still be binding
                if (body := get(f"{url}/index.html", preview.headers)) is not None:
                    break
                time.sleep(0.1)
            assert body == b"served\n"
            assert get(f"{url}/index.html", {}) is None  # without the token: refused
        recorded = [h.data.get("running_processes") for h in service.history(sbx.id) if "Suspend" in h.type]
        assert set(map(str, recorded)) == {"None"}  # nothing stopped, nothing recorded
    finally:
        store.close()
