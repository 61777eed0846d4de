"""One sweep over 100,000 sandboxes with armed deadlines, 1,000 of them due, on PostgreSQL.

    .venv/bin/python bench/sweep_bench.py [--pg-url URL] [--sandboxes N] [--due M]

The log is filled in a private schema (dropped afterwards); the sweep then runs in a fresh process, as a
scheduler replica would, with provider calls stubbed by a counting fake (the only fake here: the
benchmark measures our picking, deciding and recording, not Docker). Prints the time to pick and decide
the due sandboxes, the time of the whole fire_due (intents, stubbed suspends, outcomes), and the
process's peak RSS. Targets: pick+decide < 1 s, RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from _fill import bulk_insert, memory_mib, private_pg_schema

from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.ports import ExecResult, ProviderInstance, SnapshotInfo
from sandbox_lifecycle.core.projection import Policy, project
from sandbox_lifecycle.events import migrate
from sandbox_lifecycle.events.codec import encode
from sandbox_lifecycle.events.records import NewEvent, Projection
from sandbox_lifecycle.events.store import open_store

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = Policy()


class CountingProvider:
    name = "docker"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        self._count("suspend")
        return SnapshotInfo(snapshot_key, "0" * 64, 1024)

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        self._count("destroy")

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        self._count("delete_snapshot")

    def create(self, sandbox_id: str, kind: str) -> str:
        raise AssertionError("not used")

    def exec(self, *a: object, **k: object) -> ExecResult:
        raise AssertionError("not used")

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        return None


def streams(n: int, due: int) -> Iterator[tuple[str, list[NewEvent], Projection]]:
    for i in range(n):
        sid = f"{i:016x}"
        # The first `due` sandboxes went idle long ago; the rest were active a minute ago.
        at = NOW - (timedelta(hours=2) if i < due else timedelta(minutes=1)) + timedelta(microseconds=i)
        s = sb.initial(sid)
        evs = sb.decide(s, sb.Create(kind="data-app", provider="docker", conversation_id=f"c{i}"), at)
        s = sb.replay(sid, evs, start=s)
        more = sb.decide(s, sb.MarkReady(provider_ref=f"sbx-{sid}"), at)
        s = sb.replay(sid, more, start=s)
        yield sid, [encode(e) for e in evs + more], project(s, POLICY)


def fill(url: str, n: int, due: int) -> None:
    migrate.upgrade(url)
    projections: list[Projection] = []

    def events_only() -> Iterator[tuple[str, list[NewEvent]]]:
        for sid, evs, proj in streams(n, due):
            projections.append(proj)
            yield sid, evs

    bulk_insert(url, events_only())
    store = open_store(url)
    store.replace_all_projections(projections)
    store.close()


def sweep_only(url: str) -> None:
    """Runs in a fresh process built like `sandboxctl scheduler`: the same modules, the same bootstrap
    (with the production default provider's SDK loaded), only the provider's calls stubbed."""
    import sandbox_lifecycle.adapters.providers.e2b.provider  # noqa: F401 - the SDK a production scheduler holds in memory
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service
    from sandbox_lifecycle.adapters.entrypoints.scheduler import Ticker

    provider = CountingProvider()
    service = build_service({"SANDBOX_DATABASE_URL": url, "SANDBOX_PROVIDER": "e2b"}, provider=provider)
    service.clock = lambda: NOW
    store = service.store
    store.due_deadlines(NOW, limit=1)  # connect outside the timed part
    rss0, _ = memory_mib()

    t0 = time.perf_counter()
    due = store.due_deadlines(NOW, limit=10_000)
    decided = 0
    for d in due:
        state = service.load(d.sandbox_id)
        decided += len(sb.decide(state, sb.FireIdleTimeout(timeout=POLICY.idle_timeout), NOW)) > 0
    pick_decide = time.perf_counter() - t0

    ticker = Ticker(service, timedelta(seconds=30))
    t0 = time.perf_counter()
    report = service.fire_due(NOW, limit=10_000)
    fire = time.perf_counter() - t0
    ticker.fire()  # what the ticker does on wake-up: nothing left due, re-arm
    _, rss = memory_mib()
    print(
        json.dumps(
            {
                "due": len(due),
                "decided": decided,
                "pick_decide_s": pick_decide,
                "fire_due_s": fire,
                "fired": len(report.fired),
                "errors": report.errors[:3],
                "provider_calls": provider.calls,
                "rss_start_mb": rss0,
                "rss_peak_mb": rss,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg-url", default=os.environ.get("SANDBOX_TEST_PG_URL"))
    parser.add_argument("--sandboxes", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--sweep-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sweep_only:
        sweep_only(args.sweep_only)
        return
    if not args.pg_url:
        sys.exit("give --pg-url (or set SANDBOX_TEST_PG_URL): the benchmark runs on PostgreSQL")
    with private_pg_schema(args.pg_url, "bench_sweep") as url:
        t0 = time.perf_counter()
        fill(url, args.sandboxes, args.due)
        print(f"filled {args.sandboxes:,} sandboxes ({args.due:,} due) in {time.perf_counter() - t0:.1f}s")
        out = subprocess.run(
            [sys.executable, __file__, "--sweep-only", url], check=True, capture_output=True, text=True
        )
        result = json.loads(out.stdout)
        print(
            f"pick+decide of {result['due']:,} due: {result['pick_decide_s']:.3f}s (target < 1 s)\n"
            f"whole fire_due (intent, stubbed suspend, outcome): {result['fire_due_s']:.3f}s, "
            f"{result['fired']:,} fired, provider calls {result['provider_calls']}\n"
            f"scheduler process RSS: {result['rss_start_mb']:.0f} MB ready, "
            f"peak {result['rss_peak_mb']:.0f} MB (target < 150 MB)"
        )
        if result["errors"]:
            print("errors:", result["errors"])


if __name__ == "__main__":
    main()
