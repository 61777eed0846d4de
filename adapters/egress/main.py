"""The egress container's program: ``python3 -m egress.main proxy`` (the proxy on 3128 and the
model-API gateway on 8081) or ``python3 -m egress.main forward HOST PORT``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import threading
from functools import partial
from pathlib import Path

from . import forward
from .bookkeeping import count_transfer
from .gateway import Gateway
from .policy import PolicyBook
from .proxy import EgressProxy

PROXY_PORT = 3128
GATEWAY_PORT = 8081
READY = "egress ready"
# The exit status when the proxy's loop ends by itself: the container exits and its restart policy
# starts it again (the policies are files in the state dir, so live sandboxes keep theirs).
PROXY_DIED = 70


def run_egress(state_dir: str, proxy_port: int, gateway_port: int) -> None:
    _more_descriptors()
    proxy = EgressProxy(PolicyBook(state_dir), counts=partial(count_transfer, Path(state_dir)))
    proxy.bind("0.0.0.0", proxy_port)
    # Its own thread and loop: the gateway's work never delays a tunnel, nor the reverse.
    threading.Thread(target=_proxy_or_exit, args=(proxy,), name="proxy", daemon=True).start()
    asyncio.run(_gateway(state_dir, gateway_port))


def _proxy_or_exit(proxy: EgressProxy) -> None:
    try:
        proxy.serve_forever()
        why = "returned"
    except BaseException as exc:  # whatever it was, a process without its proxy must go
        why = f"failed: {type(exc).__name__}: {exc}"
    print(f"egress: the proxy loop {why}; exiting so that the container restarts", flush=True)
    os._exit(PROXY_DIED)


def _more_descriptors() -> None:
    """Two sockets per connection: raise the soft descriptor limit to the hard one."""
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _gateway(state_dir: str, port: int) -> None:
    server = await Gateway(state_dir).start("0.0.0.0", port)
    print(READY, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="egress")
    sub = parser.add_subparsers(dest="role", required=True)
    egress = sub.add_parser("proxy")
    egress.add_argument("--state", default="/state")
    egress.add_argument("--proxy-port", type=int, default=PROXY_PORT)
    egress.add_argument("--gateway-port", type=int, default=GATEWAY_PORT)
    fwd = sub.add_parser("forward")
    fwd.add_argument("host")
    fwd.add_argument("port", type=int)
    fwd.add_argument("--listen", type=int, default=forward.LISTEN_PORT)
    args = parser.parse_args(argv)
    if args.role == "proxy":
        run_egress(args.state, args.proxy_port, args.gateway_port)
    else:
        forward.serve(args.host, args.port, args.listen)


if __name__ == "__main__":
    main()
