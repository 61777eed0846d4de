"""Time to the first streamed event: through the model-API gateway vs straight to the upstream, one run.

    .venv/bin/python bench/gateway_bench.py [--rounds 200]

The upstream is a loopback stand-in for the Messages API (tests/support/fake_upstream.py) that answers
every POST with a chunked server-sent event stream. The gateway runs in a process of its own (as it does
in the egress container or under `sandboxctl gateway`), so it competes with the client for no lock.
For each round the client sends one streaming request and times the moment the first ``event:`` line
arrives, directly and through the gateway, interleaved round by round:

* warm: keep-alive connections on both paths (the gateway pools its upstream connection), which is how
  an SDK or the agent CLI talks to its model;
* cold: a new client connection every request (the gateway's upstream connection is still pooled).

Prints medians, p10s (the uncontended cost on a busy machine), p90s and the added milliseconds.
Goal: at most 5 ms added.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox_lifecycle.adapters.gateway.state import GatewayState  # noqa: E402
from tests.support.fake_upstream import REAL_KEY, fake_upstream  # noqa: E402

BODY = json.dumps({"model": "claude-x", "max_tokens": 16, "stream": True, "messages": []}).encode()
GATEWAY_PROCESS = """
import asyncio, sys
from sandbox_lifecycle.adapters.egress.gateway import Gateway

async def main():
    server = await Gateway(sys.argv[1]).start("127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Client:
    """One HTTP/1.1 connection; ``first_event`` sends a request and times the first event's arrival."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def first_event(self, *, keep: bool) -> float:
        lines = ["POST /v1/messages HTTP/1.1", f"host: 127.0.0.1:{self.port}", f"content-length: {len(BODY)}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if not keep:
            lines.append("connection: close")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + BODY
        started = time.perf_counter()
        sock = self._connect()
        sock.sendall(request)
        seen = b""
        first = 0.0
        for _ in range(10_000):  # bounded: the answer is a few hundred bytes
            data = sock.recv(65536)
            if not data:
                break
            seen += data
            if not first and b"event:" in seen:
                first = time.perf_counter() - started
            if seen.endswith(b"0\r\n\r\n"):
                break
        if not keep:
            sock.close()
            self.sock = None
        assert first, seen[:200]
        return first


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p10, p90 = ordered[len(ordered) // 10], ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"{name:>8} median {statistics.median(samples) * 1000:7.3f} ms  "
        f"p10 {p10 * 1000:7.3f} ms  p90 {p90 * 1000:7.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fake_upstream() as upstream:
        state = GatewayState(Path(tmp) / "egress")
        state.write_upstream(upstream.url, REAL_KEY)
        token = state.issue("bench")
        proc = subprocess.Popen(
            [sys.executable, "-c", GATEWAY_PROCESS, str(state.state_dir)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            gateway_port = int(proc.stdout.readline())
            upstream_port = int(upstream.url.rsplit(":", 1)[1])
            for mode, keep in (("warm", True), ("cold", False)):
                direct = Client(upstream_port, {"x-api-key": REAL_KEY})
                through = Client(gateway_port, {"x-api-key": token})
                for _ in range(10):  # warm-up: connections, the pool, the token file's page cache
                    direct.first_event(keep=keep)
                    through.first_event(keep=keep)
                d, g = [], []
                for _ in range(args.rounds):
                    d.append(direct.first_event(keep=keep))
                    g.append(through.first_event(keep=keep))
                added = (statistics.median(g) - statistics.median(d)) * 1000
                added_p10 = (sorted(g)[len(g) // 10] - sorted(d)[len(d) // 10]) * 1000
                print(f"{mode} connections, {args.rounds} interleaved rounds, time to first event:")
                print(summary("direct", d))
                print(summary("gateway", g))
                print(f"   added median {added:.3f} ms, at p10 {added_p10:.3f} ms (goal <= 5 ms)\n")
            counters = state.counters("bench")
            print(f"gateway counters for the run: {counters['requests']} requests, {counters['status']}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
