"""`sandboxctl gateway`: run the model-API gateway on this host, for E2B sandboxes.

Docker sandboxes reach a gateway inside their egress container, started by the Docker provider. E2B
sandboxes run in E2B's cloud, so their gateway runs here (behind whatever gives it the public HTTPS
address in ``SANDBOX_GATEWAY_PUBLIC_URL``), sharing the state directory with the backend on this host.
Loaded when this verb runs only (``commands.VERBS``): no other command pays for asyncio and ssl.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.egress.gateway import Gateway
from sandbox_lifecycle.adapters.gateway.state import prepare_gateway
from sandbox_lifecycle.core.errors import ConfigError

DEFAULT_PORT = 8081


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add(
        "gateway",
        cmd_gateway,
        "run the model-API gateway for E2B sandboxes in the foreground (SIGTERM/SIGINT stop it)",
        False,
    )
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)")


def cmd_gateway(args: argparse.Namespace) -> int:
    settings: Settings = getattr(args, "settings", None) or Settings.from_env()
    args.settings = settings
    if not settings.anthropic_api_key:
        raise ConfigError("the gateway needs ANTHROPIC_API_KEY (the real key it adds to model calls)")
    try:
        state = prepare_gateway(settings)
    except OSError as exc:
        raise ConfigError(
            f"SANDBOX_EGRESS_STATE_DIR={settings.egress_state_dir} is not usable "
            f"({exc.strerror or type(exc).__name__}): point it at a directory this user may write"
        ) from None
    asyncio.run(_serve(Gateway(state.state_dir), args.host, args.port))
    return 0


async def _serve(gateway: Gateway, host: str, port: int) -> None:
    server = await gateway.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound: Any = server.sockets[0].getsockname()
    # The one line a supervisor (or a test) reads to learn the port, flushed at once.
    print(f"gateway listening on http://{bound[0]}:{bound[1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await gateway.aclose(server)
