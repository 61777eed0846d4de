"""The console as an ASGI app (Starlette): the routes, what each reads, and the live feed's event stream.

``create_app`` takes a read-only ``SandboxService`` (one built without a provider: the console never
needs the provider's credentials) and returns the app wrapped in ``ConsoleGuard`` (adapters/console/
auth.py): GET and HEAD only, loopback or a token. Every route is a plain read of the log or the read
model; the synchronous ones run in Starlette's thread pool, the event stream awaits the feed.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from sandbox_lifecycle.adapters.audit import signed_head as audit_head
from sandbox_lifecycle.adapters.console import pages
from sandbox_lifecycle.adapters.console.auth import ASGIApp, ConsoleGuard
from sandbox_lifecycle.adapters.console.fleet import FleetQuery, bounded_int, fleet_page
from sandbox_lifecycle.core import feed
from sandbox_lifecycle.core.audit import Anchor, verify_chains
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import ConfigError, SandboxNotFound, StoreError

# The live page starts with this many of the latest events, then follows the feed.
RECENT = 50
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class HeadSource:
    """A signed head file (``audit head --json``) the audit page checks the log against, re-read on each
    visit (an auditor may replace it with a newer one), and the public key it must be signed by."""

    path: str
    public_key: str | None = None

    def load(self, deployment: str) -> tuple[audit_head.SignedHead, bool]:
        """The head and whether its signature was checked against a pinned key; ValueError (or
        ConfigError) says why a head cannot be trusted."""
        head = audit_head.SignedHead.from_json(Path(self.path).read_bytes())
        pinned = audit_head.check(
            head, audit_head.load_public_key(self.public_key) if self.public_key else None
        )
        if head.deployment != deployment:
            raise ValueError(f"signed for deployment {head.deployment!r}, this is {deployment!r}")
        return head, pinned


def _static(name: str) -> bytes:
    return resources.files("sandbox_lifecycle.adapters.console").joinpath("static", name).read_bytes()


class Console:
    """The routes' shared state: the service they read, the limits, the deployment's name."""

    def __init__(
        self,
        service: Any,
        capacity: Capacity,
        deployment: str,
        head: HeadSource | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.service = service
        self.store = service.store
        self.capacity = capacity
        self.deployment = deployment
        self.head = head
        # Set when the server stops: the event streams end instead of holding the shutdown.
        self.stop = stop or threading.Event()
        self.files = {name: _static(name) for name in STATIC}

    @staticmethod
    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/") + "/"

    def checkpoint_count(self, sandbox_id: str) -> int | None:
        """None for a stream the log cannot read (the audit page says why)."""
        try:
            return len(self.service.load(sandbox_id).checkpoints)
        except SandboxNotFound:
            return 0
        except StoreError:
            return None

    def fleet(self, request: Request) -> Response:
        query = FleetQuery.parse(request.query_params)
        view = fleet_page(self.store.engine, query, self.capacity, self.checkpoint_count)
        return HTMLResponse(pages.fleet(view, self.deployment, self.base(request)))

    def sandbox(self, request: Request) -> Response:
        sandbox_id = request.path_params["sandbox_id"]
        base = self.base(request)
        row = self.store.get_sandbox(sandbox_id)
        if row is None:
            return HTMLResponse(
                pages.not_found(f"no sandbox {sandbox_id} in the log", self.deployment, base), 404
            )
        try:
            entries = self.service.history(sandbox_id)
            checkpoints = self.service.checkpoints(sandbox_id)
        except StoreError as exc:  # a stream the log cannot read as written (tampered, or cut)
            return HTMLResponse(
                pages.not_found(
                    f"the log cannot show this sandbox: {exc} (see Audit)", self.deployment, base
                ),
                500,
            )

        def history_of(sid: str) -> Any:
            try:
                return self.service.history(sid)
            except (SandboxNotFound, StoreError):
                return None

        def checkpoints_of(sid: str) -> list[int]:
            try:
                return [c.version for c in self.service.checkpoints(sid)]
            except (SandboxNotFound, StoreError):
                return []

        tree = pages.lineage(sandbox_id, history_of, checkpoints_of)
        now = datetime.now(UTC)
        return HTMLResponse(pages.sandbox(row, entries, checkpoints, tree, now, self.deployment, base))

    def audit(self, request: Request) -> Response:
        head, head_error, anchor = None, None, None
        if self.head is not None:
            try:
                signed, pinned = self.head.load(self.deployment)
            except (OSError, ValueError, ConfigError) as exc:
                head_error = f"{self.head.path}: {exc.strerror if isinstance(exc, OSError) else exc}"
            else:
                anchor = Anchor(signed.position, signed.log_hash)
                head = signed.as_json() | {"pinned": pinned}
        report = verify_chains(self.store, anchor=anchor)
        status = 200
        return HTMLResponse(
            pages.audit(report, head, head_error, self.deployment, self.base(request)), status
        )

    def live(self, request: Request) -> Response:
        position = (self.store.log_head() or (0, ""))[0]
        recent = self.store.read_all(max(position - RECENT, 0), RECENT)
        after = recent[-1].position if recent else position
        return HTMLResponse(pages.live(recent, after, self.deployment, self.base(request)))

    async def stream(self, request: Request) -> Response:
        """The feed after ``?after=N`` (or the browser's Last-Event-ID on a reconnect) as server-sent
        events, one per event committed, in commit order, until the client goes or the server stops."""
        raw = request.headers.get("last-event-id") or request.query_params.get("after")
        after = bounded_int(raw, 0, 0, 2**63 - 1)

        async def read_all(position: int, limit: int) -> Any:
            return await anyio.to_thread.run_sync(self.store.read_all, position, limit)

        async def events() -> AsyncIterator[bytes]:
            yield b": the sandbox feed\nretry: 1000\n\n"
            async for event in feed.atail(read_all, after, True, stop=self.stop):  # type: ignore[arg-type]
                data = orjson.dumps(pages.live_event(event))
                yield b"id: %d\nevent: sandbox\ndata: %s\n\n" % (event.position, data)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
        )

    def favicon(self, request: Request) -> Response:
        """Browsers ask for /favicon.ico whatever the page links (Chromium does, after a navigation)."""
        return Response(self.files["favicon.svg"], media_type=STATIC["favicon.svg"])

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.files:
            return Response("not found", 404, media_type="text/plain")
        return Response(self.files[name], media_type=STATIC[name], headers={"cache-control": "no-cache"})


def create_app(
    service: Any,
    *,
    capacity: Capacity | None = None,
    deployment: str = "default",
    token: str | None = None,
    head: HeadSource | None = None,
    stop: threading.Event | None = None,
) -> ASGIApp:
    """The read-only console over ``service`` (a backend mounts it, e.g. ``app.mount("/console", ...)``).

    ``token``: SANDBOX_CONSOLE_TOKEN; without one only loopback clients are served. ``head``: a signed
    head the audit page checks the log against. ``stop``: set it to end the open event streams."""
    console = Console(service, capacity or Capacity(), deployment, head, stop)
    routes = [
        Route("/", console.fleet, methods=["GET"]),
        Route("/sandboxes/{sandbox_id:path}", console.sandbox, methods=["GET"]),
        Route("/audit", console.audit, methods=["GET"]),
        Route("/live", console.live, methods=["GET"]),
        Route("/live/events", console.stream, methods=["GET"]),
        Route("/static/{name}", console.static, methods=["GET"]),
        Route("/favicon.ico", console.favicon, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.console = console
    return ConsoleGuard(app, token)
