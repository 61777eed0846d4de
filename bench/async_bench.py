"""Threads or the e2b SDK's native AsyncSandbox for the asyncio face? 20 concurrent execs on E2B.

    .venv/bin/python bench/async_bench.py [--concurrency 20] [--rounds 5] [--sleep 1]

The E2B side is the loopback E2B server of the tests (tests/support/fake_e2b.py), run in a child process so
that the numbers below are this process's own: wall time of a round of ``concurrency`` concurrent execs,
and the CPU time this process spent on it (the client's cost; the server's is not counted).

Ways compared, each on the same ``concurrency`` running E2B sandboxes:

* ``native``: ``AsyncSandbox.commands.run`` from ``asyncio.gather`` (no threads at all);
* ``threads-provider``: the sync ``E2BProvider.exec`` in a pool of ``concurrency`` threads;
* ``threads-service``: ``AsyncSandboxService.exec`` (what ``connect_async()`` gives): the provider call
  plus the log's activity records on SQLite, in the service's own pool;
* ``default-executor``: ``asyncio.to_thread(provider.exec)``, i.e. asyncio's default pool
  (``min(32, cpus + 4)`` threads), to show why the service owns a pool.

Two commands: ``sleep S`` (latency-bound: are the execs really concurrent?) and ``true`` (overhead-bound:
what does one exec cost the client?). Prints one JSON object per (way, command): median wall and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from e2b import E2B, AsyncSandbox  # noqa: E402

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings  # noqa: E402
from sandbox_lifecycle.core.async_service import AsyncSandboxService  # noqa: E402
from sandbox_lifecycle.core.service import SandboxService  # noqa: E402
from sandbox_lifecycle.events.migrate import upgrade  # noqa: E402
from sandbox_lifecycle.events.store import open_store  # noqa: E402

API_KEY = "e2b_bench_key_0123456789"
_SERVER = """
import sys
from http.server import ThreadingHTTPServer
from pathlib import Path
from tests.support.fake_e2b import FakeE2B
# The stdlib's listen backlog of 5 resets a burst of 20 new connections; E2B's front end has no such
# limit, and the burst is what is measured here.
ThreadingHTTPServer.request_queue_size = 128
fake = FakeE2B(sys.argv[1], Path(sys.argv[2]), max_process_seconds=120)
fake.start()
print(fake.url, flush=True)
sys.stdin.read()  # until the parent closes our stdin
fake.stop()
"""


def start_server(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, API_KEY, str(workdir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def timed(make_round: Callable[[], Awaitable[Any]], rounds: int) -> dict[str, float]:
    walls, cpus = [], []
    await make_round()  # warm-up: connections, handles, compiled statements
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        await make_round()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": round(statistics.median(walls), 3), "cpu_ms": round(statistics.median(cpus) * 1000, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=1.0)
    args = parser.parse_args()
    n = args.concurrency

    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp) / "e2b")
        try:
            env = {"E2B_API_KEY": API_KEY, "E2B_API_URL": url, "E2B_SANDBOX_URL": url}
            settings = dataclasses.replace(E2BSettings.from_env(env), request_timeout=30.0)
            provider = E2BProvider(settings, deployment="bench")
            db = f"sqlite:///{tmp}/bench.db"
            upgrade(db)
            service = SandboxService(open_store(db), provider)
            rows = [service.create("data-app") for _ in range(n)]
            refs = [row.provider_ref or "" for row in rows]
            client = E2B(api_key=API_KEY, api_url=url, sandbox_url=url, request_timeout=30.0)
            natives: list[AsyncSandbox] = [await client.AsyncSandbox.connect(ref) for ref in refs]
            pool = ThreadPoolExecutor(n)
            aservice = AsyncSandboxService(service, max_workers=n)
            loop = asyncio.get_running_loop()

            for argv in (["sleep", str(args.sleep)], ["true"]):
                cmd = " ".join(argv)

                async def native(cmd: str = cmd) -> Any:
                    return await asyncio.gather(*(s.commands.run(cmd, timeout=60) for s in natives))

                async def threads_provider(argv: list[str] = argv) -> Any:
                    return await asyncio.gather(
                        *(
                            loop.run_in_executor(pool, lambda r=r: provider.exec(r, argv, timeout=60))
                            for r in refs
                        )
                    )

                async def threads_service(argv: list[str] = argv) -> Any:
                    return await asyncio.gather(*(aservice.exec(row.id, argv, timeout=60) for row in rows))

                async def default_executor(argv: list[str] = argv) -> Any:
                    return await asyncio.gather(
                        *(asyncio.to_thread(provider.exec, r, argv, timeout=60) for r in refs)
                    )

                ways = {
                    "native": native,
                    "threads-provider": threads_provider,
                    "threads-service": threads_service,
                    "default-executor": default_executor,
                }
                for way, fn in ways.items():
                    result = await timed(fn, args.rounds)
                    print(
                        json.dumps(
                            {
                                "way": way,
                                "command": cmd,
                                "concurrency": n,
                                **result,
                                "cpu_ms_per_exec": round(result["cpu_ms"] / n, 2),
                                "threads": threading.active_count(),
                                "cpus": os.cpu_count(),
                            }
                        ),
                        flush=True,
                    )
            pool.shutdown()
            await aservice.aclose()
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
