"""A warning before a timer acts (ExpiryWarned) reaches the webhook exactly once per deadline, at the
deadline minus the lead on a fake clock; a touch moves the deadline and the next warning names the new
one. The receiver runs on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sandbox_lifecycle.adapters.entrypoints.relay import WebhookRelay
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.checkpoints import Checkpoints
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import Clock, FakeProvider

SECRET = b"whsec-test-warnings"
IDLE = timedelta(minutes=30)
LEAD = timedelta(minutes=2)


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_the_relay_delivers_each_warning_once_and_a_touch_brings_a_new_one(
    clean_sqlite_url: str, hook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, got = hook
    store = open_store(clean_sqlite_url)
    clock = Clock()
    service = SandboxService(
        store, FakeProvider(), policy=Policy(idle_timeout=IDLE, warning_lead=LEAD), clock=clock
    )
    relay = WebhookRelay(store, Checkpoints(store.engine), url, SECRET, name="warnings")

    def warnings() -> list[dict[str, Any]]:
        relay.run(follow=False)
        return [e for e in got if e["type"] == "ExpiryWarned"]

    try:
        start = clock.now
        sid = service.create("data-app", "conv").id
        clock.now = start + IDLE - LEAD - timedelta(milliseconds=1)
        service.fire_due()
        assert warnings() == []
        clock.now = start + IDLE - LEAD
        service.fire_due()
        service.fire_due()
        (first,) = warnings()
        assert first["stream_id"] == sid
        assert (first["reason"], first["actor"]) == ("expiring", "scheduler")
        assert first["data"]["timer"] == "idle"
        assert first["data"]["due_at"] == (start + IDLE).isoformat()

        touched = clock.advance(seconds=10)
        service.touch(sid)
        clock.now = touched + IDLE - LEAD
        service.fire_due()
        later = warnings()
        assert [w["data"]["due_at"] for w in later] == [
            (start + IDLE).isoformat(),
            (touched + IDLE).isoformat(),
        ]
        assert len({w["event_id"] for w in later}) == 2
    finally:
        store.close()
