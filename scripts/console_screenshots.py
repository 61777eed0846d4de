"""The console's pages as pictures for docs/console.md, over a scripted demo log (run by
scripts/console-screenshots).

The demo drives the service with the test suite's fake provider (no engine, no credentials) on a clock
that starts three hours ago, so the timelines have shape: a dozen sandboxes of both kinds, turns,
suspends, a resume, destroys, a fork of a fork. The console is served on a loopback port and each page
photographed by headless Chromium; last, one event is edited behind the store's back and the audit page
photographed again, red.
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.console import create_app
from sandbox_lifecycle.core.capacity import Capacity
from tests.support.fakes import Clock, FakeProvider

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def demo(data_dir: Path) -> tuple[object, str]:
    """The demo log; returns the service and the id of the sandbox with forks."""
    service = build_service(
        {"SANDBOX_DATA_DIR": str(data_dir), "SANDBOX_DEPLOYMENT": "demo"}, provider=FakeProvider()
    )
    clock = Clock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3))
    service.clock = clock  # type: ignore[method-assign]

    def later(minutes: float) -> None:
        clock.advance(minutes=minutes)

    def turn(conversation: str, kind: str, minutes: float) -> str:
        with service.turn(conversation, kind, actor="agent") as handle:
            later(minutes)
            service.touch(handle.id, actor="agent")
        return str(handle.id)

    main = turn("checkout-redesign", "data-app", 12)
    later(20)
    turn("checkout-redesign", "data-app", 9)
    later(15)
    fork = service.fork(
        main, service.checkpoints(main)[0].version, conversation_id="checkout-redesign-b", actor="ops"
    )
    later(5)
    service.fork(
        main, service.checkpoints(main)[-1].version, conversation_id="checkout-redesign-c", actor="ops"
    )
    later(10)
    turn("checkout-redesign-b", "data-app", 7)
    later(3)
    service.fork(fork.id, service.checkpoints(fork.id)[-1].version, conversation_id="checkout-redesign-b2")
    for i in range(6):
        later(4)
        sid = service.create(
            "data-app" if i % 2 else "ai-writeback", f"ticket-{4100 + i}", actor="backend"
        ).id
        if i % 3 == 0:
            later(6)
            service.suspend(sid, reason="idle", actor="scheduler")
        if i == 4:
            later(2)
            service.destroy(sid, reason="user", actor="ops")
    later(8)
    with service.turn("checkout-redesign", "data-app", actor="agent"):
        later(1)
    service.create("data-app", "weekly-report", actor="backend")
    with service.turn("ticket-4101", "data-app", keep_warm=True, actor="agent"):
        pass
    return service, main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description="regenerate docs/console/*.png")
    parser.add_argument("--out", default="docs/console", help="where the pictures go")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        service, main_id = demo(Path(tmp))
        stop = threading.Event()
        capacity = Capacity(max_live=8, max_live_per_kind={"data-app": 6, "ai-writeback": 3})
        app = create_app(service, capacity=capacity, deployment="demo", stop=stop)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, access_log=False, log_level="warning", lifespan="off"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(url)
                page.screenshot(path=out / "fleet.png", full_page=True)
                page.goto(url + f"sandboxes/{main_id}")
                page.screenshot(path=out / "sandbox.png", full_page=True)
                page.goto(url + "audit")
                page.screenshot(path=out / "audit.png", full_page=True)
                page.goto(url + "live")
                page.wait_for_selector("#live-status.on")
                last = service.list("idle")[0].id  # type: ignore[attr-defined]
                service.suspend(last, reason="user", actor="ops")  # type: ignore[attr-defined]
                page.wait_for_selector(f'#live tbody tr:has-text("{last}"):has-text("Suspended")')
                page.screenshot(path=out / "live.png", full_page=False)
                db = sqlite3.connect(Path(tmp) / "sandbox.db")
                with db:
                    db.execute(
                        "UPDATE events SET meta = json_set(meta, '$.actor', 'someone-else') "
                        "WHERE stream_id = ? AND version = 2",
                        (main_id,),
                    )
                db.close()
                page.goto(url + "audit")
                page.screenshot(path=out / "audit-failed.png", full_page=True)
                browser.close()
        finally:
            stop.set()
            server.should_exit = True
            thread.join(10)
            service.store.close()  # type: ignore[attr-defined]
    for name in sorted(out.glob("*.png")):
        print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
