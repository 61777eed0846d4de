"""`sandboxctl console`: serve the read-only web console (adapters/console, docs/console.md).

Loopback by default; any other bind needs ``SANDBOX_CONSOLE_TOKEN`` (refused before anything is served
otherwise). The service is built read-only: no provider, no provider credentials. uvicorn's access log
is off, since its lines carry query strings and a browser signs in with ``?token=``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from sandbox_lifecycle.adapters.entrypoints.cli.context import Usage, service_of, settings_of

AddVerb = Callable[..., argparse.ArgumentParser]
DEFAULT_PORT = 8717


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {raw!r}")
    return int(raw)


def cmd_console(args: argparse.Namespace) -> int:
    # Imported here: Starlette and uvicorn are the `console` extra, and only this verb loads them.
    try:
        import uvicorn

        from sandbox_lifecycle.adapters.console import HeadSource, create_app
        from sandbox_lifecycle.adapters.console.auth import TOKEN_ENV, check_token, is_loopback
    except ImportError as exc:
        raise Usage(
            f"the console needs the 'console' extra ({exc.name} is missing): "
            "pip install 'sandbox-lifecycle[console]'"
        ) from None
    try:
        token = check_token(os.environ.get(TOKEN_ENV))
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if token is None and not is_loopback(args.bind):
        raise Usage(
            f"--bind {args.bind} is not a loopback address: set {TOKEN_ENV} (at least 16 characters) "
            "so that only those who hold it can read the console"
        )
    settings = settings_of(args)
    service = service_of(args, read_only=True)
    stop = threading.Event()
    head = HeadSource(args.head, args.public_key) if args.head else None
    app = create_app(
        service, capacity=settings.capacity, deployment=settings.deployment, token=token, head=head, stop=stop
    )
    config = uvicorn.Config(
        app,
        host=args.bind,
        port=args.port,
        access_log=False,
        log_level="warning",
        # Open event streams end at shutdown (``stop``) instead of holding it for their clients.
        timeout_graceful_shutdown=2,
        lifespan="off",
    )

    class Server(uvicorn.Server):
        """uvicorn's server that also sets ``stop`` when asked to exit (SIGINT, SIGTERM)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            stop.set()
            super().handle_exit(sig, frame)

    server = Server(config)
    print(
        f"sandbox console on http://{_shown_host(args.bind)}:{args.port}/ (read-only)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run()
    finally:
        service.store.close()  # type: ignore[attr-defined]
    return 0


def _shown_host(bind: str) -> str:
    return f"[{bind}]" if ":" in bind else bind


def register(add: AddVerb, sub: Any) -> None:
    sp = add("console", cmd_console, "serve the read-only web console (fleet, sandbox, audit, live)", False)
    sp.add_argument(
        "--bind", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1)"
    )
    sp.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, metavar="N", help=f"port (default {DEFAULT_PORT})"
    )
    sp.add_argument(
        "--head", metavar="FILE", help="a signed head (`audit head --json`) the audit page checks"
    )
    sp.add_argument("--public-key", metavar="PEM", help="the key the head must be signed by")
