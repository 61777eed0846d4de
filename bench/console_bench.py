"""The console's fleet page over 100 and 10,000 sandboxes, side by side: it reads the read model, so its
time must not grow with the fleet (target: <= 1 s at 10,000).

    .venv/bin/python bench/console_bench.py [--sandboxes N]

Each log is bulk-written (not timed) from the lifecycle of bench/rebuild_bench.py, cut at different
points so the fleet holds idle, suspended and expired sandboxes, and its projections rebuilt as
`replay --rebuild` does. Then the fleet page is fetched through the app (Starlette's test client: the
whole request, rendering included, without a socket): the first page, a page deep in the list, and a
filtered one. For scale, the fold of every stream that a page reading the log itself would need.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from _fill import bulk_insert
from rebuild_bench import lifecycle_template

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.console import create_app
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import rebuild
from sandbox_lifecycle.events import migrate
from sandbox_lifecycle.events.codec import encode
from sandbox_lifecycle.events.records import NewEvent

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's TestClient asks for httpx2; httpx works
    from starlette.testclient import TestClient

RUNS = 5


def fill(url: str, n: int) -> None:
    template = [encode(e) for e in lifecycle_template(turns=2)]
    # Where each sandbox's stream stops: idle after its create, suspended after a turn, or expired.
    cuts = [2, 7, len(template)]

    def streams() -> Iterator[tuple[str, list[NewEvent]]]:
        for i in range(n):
            sid = f"{i:016x}"
            stream = []
            for e in template[: cuts[i % 3]]:
                data = dict(e.data)
                if "snapshot_key" in data:
                    data["snapshot_key"] = data["snapshot_key"].replace("tmpl", sid)
                if "conversation_id" in data:
                    data["conversation_id"] = f"conv-{i}"
                stream.append(replace(e, data=data, occurred_at=e.occurred_at + timedelta(seconds=i)))
            yield sid, stream

    bulk_insert(url, streams())


def timed(call: Callable[[], object]) -> float:
    """The median of RUNS calls, in seconds."""
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'sandbox.db'}"
        migrate.upgrade(url)
        fill(url, n)
        service = build_service({"SANDBOX_DATA_DIR": tmp}, require_provider=False)
        service.store.replace_all_projections(rebuild(service.store, Policy()))  # type: ignore[attr-defined]
        client = TestClient(create_app(service), client=("127.0.0.1", 1))

        def get(path: str) -> None:
            answer = client.get(path)
            assert answer.status_code == 200 and 'table class="fleet"' in answer.text, path

        out = {
            "first page": timed(lambda: get("/")),
            "last page": timed(lambda: get(f"/?page={max(1, -(-n // 50))}")),
            "filtered": timed(lambda: get("/?state=suspended&id=00000000000")),
            "fold every stream": timed(lambda: rebuild(service.store, Policy())),
        }
        service.store.close()  # type: ignore[attr-defined]
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sandboxes", type=int, default=10_000)
    args = parser.parse_args()
    small, large = measure(100), measure(args.sandboxes)
    print(f"fleet page, median of {RUNS}: 100 vs {args.sandboxes:,} sandboxes in the log")
    for label in small:
        ratio = large[label] / small[label]
        print(f"  {label:18} {small[label] * 1000:8.1f} ms  {large[label] * 1000:8.1f} ms  x{ratio:5.1f}")
    worst = max(large[k] for k in ("first page", "last page", "filtered"))
    print(f"slowest fleet page at {args.sandboxes:,} sandboxes: {worst:.3f} s (target <= 1 s)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
