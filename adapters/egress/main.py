"""The egress container's program: ``python3 -m egress.main proxy`` (the proxy on 3128 and the
model-API gateway on 8081) or ``python3 -m egress.main forward HOST PORT``."""

from __future__ import annotations

import argparse
import asyncio
import threading

from . import forward
from .gateway import Gateway
from .policy import PolicyBook
from .proxy import EgressProxy

PROXY_PORT = 3128
GATEWAY_PORT = 8081
READY = "egress ready"


def run_egress(state_dir: str, proxy_port: int, gateway_port: int) -> None:
    proxy = EgressProxy(PolicyBook(state_dir))
    proxy.bind("0.0.0.0", proxy_port)
    threading.Thread(target=proxy.serve_forever, name="proxy", daemon=True).start()
    asyncio.run(_gateway(state_dir, gateway_port))


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
