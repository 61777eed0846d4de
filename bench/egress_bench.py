"""Egress proxy vs direct, side by side on loopback: 100 MB download throughput and added latency.

The proxy is the egress container's own program (adapters/egress), run here as a process on the host
with a policy that treats 127.0.0.0/8 as a sandbox network and pins ``bench.test`` to 127.0.0.1. The
origin server and the proxy each run in a process of their own, so neither shares the client's GIL.

    .venv/bin/python bench/egress_bench.py [--mb 100] [--requests 300]

Prints MB/s direct, through a CONNECT tunnel and through absolute-form HTTP (goal: >= 80 % of direct),
and the median per-request latency direct vs through the proxy, a new connection each (goal: <= 2 ms
added). With ``--docker N``, also what a sandbox's network costs its create and destroy on the local
engine (making the network and attaching the egress container; removing them), medians of N, with the
egress container already running.

Then B's request latency at rest and while A attacks (goal: <= 1.5x): A and B are two sandboxes
(127.0.0.2 and 127.0.0.3, each a /32 policy); A holds 300 half-open connections (half a request line
each; its share is 128, the rest are refused) and runs 4 big downloads through tunnels in a loop.
On a small machine A's downloads alone keep the cores busy, so the same four downloads are also run
straight to the origin (not through the proxy) while B is measured: that row is the machine's share of
B's slowdown, and the ratio of the two rows the proxy's own.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import socket
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

from sandbox_lifecycle.adapters.egress.policy import PolicyBook, policy_document, write_policy
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy, wait_listening
from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings

CHUNK = 1 << 20


def origin(port: int, size: int) -> None:
    """A minimal HTTP/1.0 origin: GET /big sends ``size`` bytes, anything else a short body."""
    payload = memoryview(b"x" * CHUNK)
    server = socket.create_server(("127.0.0.1", port), backlog=512)
    while True:
        conn, _ = server.accept()
        # A thread each: B's small request must not queue behind A's big downloads at the origin.
        threading.Thread(target=serve_closing, args=(conn, payload, size), daemon=True).start()


def serve_closing(conn: socket.socket, payload: memoryview, size: int) -> None:
    with conn, contextlib.suppress(OSError):  # a probe that connected and left
        serve_one(conn, payload, size)


def serve_one(conn: socket.socket, payload: memoryview, size: int) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        data = conn.recv(65536)
        if not data:
            return
        request += data
    big = b" /big " in request.split(b"\r\n")[0]
    length = size if big else 2
    conn.sendall(f"HTTP/1.0 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
    if not big:
        conn.sendall(b"ok")
        return
    left = size
    while left:
        n = min(left, CHUNK)
        conn.sendall(payload[:n])
        left -= n


def proxy(port: int, state_dir: str) -> None:
    egress = EgressProxy(PolicyBook(state_dir), log=lambda line: None)
    egress.bind("127.0.0.1", port)
    egress.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_response(sock: socket.socket) -> int:
    """Bytes of the body, read until the server closes."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    head = b""
    while b"\r\n\r\n" not in head:
        n = sock.recv_into(view)
        if not n:
            raise RuntimeError("closed before the head")
        head += bytes(view[:n])
    body = len(head.partition(b"\r\n\r\n")[2])
    while n := sock.recv_into(view):
        body += n
    return body


def get(mode: str, origin_port: int, proxy_port: int, path: str, source: str = "127.0.0.1") -> int:
    via = (source, 0)
    if mode == "direct":
        sock = socket.create_connection(("127.0.0.1", origin_port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: bench.test\r\n\r\n".encode())
    elif mode == "connect":
        sock = socket.create_connection(("127.0.0.1", proxy_port))
        sock.sendall(
            f"CONNECT bench.test:{origin_port} HTTP/1.1\r\nHost: bench.test:{origin_port}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        assert b" 200 " in answer.split(b"\r\n")[0], answer
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: bench.test\r\n\r\n".encode())
    else:
        sock = socket.create_connection(("127.0.0.1", proxy_port), source_address=via)
        request = f"GET http://bench.test:{origin_port}{path} HTTP/1.1\r\nHost: bench.test\r\n\r\n"
        sock.sendall(request.encode())
    with sock:
        return read_response(sock)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--docker", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.docker:
        network_cost(args.docker)
    size = args.mb * 1024 * 1024
    origin_port, proxy_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as state:
        for name, subnet in (("bench", "127.0.0.1/32"), ("A", "127.0.0.2/32"), ("B", "127.0.0.3/32")):
            write_policy(
                state,
                policy_document(
                    name,
                    "data-app",
                    subnet,
                    [f"bench.test:{origin_port}"],
                    [f"bench.test:{origin_port}:127.0.0.1"],
                    "SANDBOX_EGRESS_ALLOW_DATA_APP",
                ),
            )
        procs = [
            multiprocessing.Process(target=origin, args=(origin_port, size), daemon=True),
            multiprocessing.Process(target=proxy, args=(proxy_port, state), daemon=True),
        ]
        for p in procs:
            p.start()
        assert wait_listening("127.0.0.1", origin_port) and wait_listening("127.0.0.1", proxy_port)
        modes = ("direct", "connect", "http")
        rates: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits every mode alike
            for mode in modes:
                start = time.perf_counter()
                got = get(mode, origin_port, proxy_port, "/big")
                elapsed = time.perf_counter() - start
                assert got == size, (mode, got)
                rates[mode].append(size / elapsed / 1e6)
        latency: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.requests):
            for mode in modes:
                start = time.perf_counter()
                get(mode, origin_port, proxy_port, "/small")
                latency[mode].append((time.perf_counter() - start) * 1000)
        at_rest = b_latency(origin_port, proxy_port, args.requests)
        stop = multiprocessing.Event()
        attacker = multiprocessing.Process(target=attack, args=(origin_port, proxy_port, stop), daemon=True)
        attacker.start()
        time.sleep(2)  # the half-open connections are in and the downloads running
        attacked = b_latency(origin_port, proxy_port, args.requests)
        stop.set()
        attacker.join(30)
        stop = multiprocessing.Event()
        loader = multiprocessing.Process(target=load_directly, args=(origin_port, stop), daemon=True)
        loader.start()
        time.sleep(2)
        loaded = b_latency(origin_port, proxy_port, args.requests)
        stop.set()
        loader.join(30)
        for p in procs:
            p.terminate()
    direct = statistics.median(rates["direct"])
    print(f"{args.mb} MB download, median of {args.rounds} (MB/s):")
    for mode in modes:
        rate = statistics.median(rates[mode])
        print(f"  {mode:8s} {rate:8.0f}  {rate / direct:6.1%} of direct")
    base = statistics.median(latency["direct"])
    print(f"per-request latency, new connection each, median of {args.requests} (ms):")
    for mode in modes:
        med = statistics.median(latency[mode])
        print(f"  {mode:8s} {med:7.3f}  added {med - base:+.3f}")
    rest, under = statistics.median(at_rest), statistics.median(attacked)
    print(f"sandbox B, plain HTTP request, median of {args.requests} (ms):")
    print(f"  at rest        {rest:7.3f}")
    print(f"  A attacking    {under:7.3f}  {under / rest:4.2f}x  (max {max(attacked):.1f} ms)")
    machine = statistics.median(loaded)
    print(f"  A's load, not proxied {machine:7.3f}  {machine / rest:4.2f}x  (the machine's share)")
    print(f"  proxy's own share: attacking / not proxied = {under / machine:4.2f}x")


def b_latency(origin_port: int, proxy_port: int, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        get("http", origin_port, proxy_port, "/small", source="127.0.0.3")
        times.append((time.perf_counter() - start) * 1000)
    return times


def attack(origin_port: int, proxy_port: int, stop: Any) -> None:
    """Sandbox A: 300 half-open connections held, and 4 big downloads in a loop, until ``stop``."""
    held = []
    for _ in range(300):
        with contextlib.suppress(OSError):
            sock = socket.create_connection(
                ("127.0.0.1", proxy_port), timeout=3, source_address=("127.0.0.2", 0)
            )
            sock.sendall(b"GET http://bench.test/ha")
            held.append(sock)

    def download() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, AssertionError, RuntimeError):
                get("connect", origin_port, proxy_port, "/big", source="127.0.0.2")

    workers = [threading.Thread(target=download, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    stop.wait(120)
    for worker in workers:
        worker.join(30)
    for sock in held:
        sock.close()


def load_directly(origin_port: int, stop: Any) -> None:
    """A's four big downloads in a loop, straight to the origin: the attack's CPU load without the proxy."""

    def download() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, AssertionError, RuntimeError):
                get("direct", origin_port, 0, "/big", source="127.0.0.2")

    workers = [threading.Thread(target=download, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    stop.wait(120)
    for worker in workers:
        worker.join(30)


def network_cost(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        deployment = f"bench-{uuid.uuid4().hex[:6]}"
        client = docker.from_env()
        nets = SandboxNetworks(
            lambda: client, deployment, EgressSettings(state_dir=Path(state)), "lightdash-sandbox:local"
        )
        start = time.perf_counter()
        nets.ensure_egress()
        first = time.perf_counter() - start
        made, released = [], []
        try:
            for i in range(rounds):
                sid = f"{deployment}-{i}"
                start = time.perf_counter()
                nets.prepare(sid, "data-app")
                made.append(time.perf_counter() - start)
                start = time.perf_counter()
                nets.release(sid)
                released.append(time.perf_counter() - start)
        finally:
            nets.remove_unused(datetime.now(UTC), set())
    print(f"sandbox network on the local engine (medians of {rounds}; ms):")
    print(f"  first egress start {first * 1000:7.0f}")
    print(f"  prepare (network, policy, egress attached) {statistics.median(made) * 1000:7.0f}")
    print(f"  release (egress detached, network removed) {statistics.median(released) * 1000:7.0f}")


if __name__ == "__main__":
    main()
