"""Rebuild every projection from a log of N events (default 1,000,000) and print events/s.

    .venv/bin/python bench/rebuild_bench.py [--events N] [--pg-url postgresql+psycopg://...]

The log is realistic: each sandbox lives create → turns (activity, suspend, resume) → retention GC, as the
decider emits it. Events are bulk-inserted (that part is not timed); the rebuild reads the streams in
(stream id, version) order through the store, decodes, folds and projects, exactly as
`sandboxctl replay --rebuild` does: in one process, then in parallel (this process and spawned workers
claiming ranges of stream ids, see adapters/entrypoints/rebuild.py).
Target: >= 200,000 events/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from _fill import bulk_insert, private_pg_schema

from sandbox_lifecycle.adapters.entrypoints.rebuild import default_workers, parallel_rebuild
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core import timers
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.events import migrate
from sandbox_lifecycle.events.codec import encode
from sandbox_lifecycle.events.records import NewEvent, Projection
from sandbox_lifecycle.events.store import open_store


def lifecycle_template(turns: int) -> list[sb.ev.Event]:
    """One sandbox's whole life, as the decider emits it."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    s = sb.initial("tmpl")
    out: list[sb.ev.Event] = []

    def do(cmd: sb.Command) -> None:
        nonlocal s, now
        now += timedelta(seconds=7)
        new = sb.decide(s, cmd, now)
        s = sb.replay("tmpl", new, start=s)
        out.extend(new)

    do(sb.Create(kind="data-app", provider="docker", conversation_id="conv"))
    do(sb.MarkReady(provider_ref="sbx-tmpl"))
    for t in range(turns):
        if s.status == "suspended":
            do(sb.RequestResume(reason="turn_start"))
            do(sb.MarkResumed(provider_ref="sbx-tmpl", reason="turn_start"))
        do(sb.StartTurn(turn_id=f"t{t}"))
        now += timedelta(minutes=5)
        do(sb.Touch())
        do(sb.EndTurn(turn_id=f"t{t}", suspend=True))
        do(sb.MarkSuspended(snapshot_key=s.pending_snapshot_key or "", sha256="ab" * 32, bytes=123456))
    now += timedelta(days=8)
    do(timers.FireRetention(retention=timedelta(days=7)))
    do(sb.MarkDestroyed(reason="retention"))
    return out


def fill(store_url: str, n_events: int) -> int:
    template = [encode(e) for e in lifecycle_template(turns=3)]
    n_sandboxes = n_events // len(template)

    def streams() -> Iterator[tuple[str, list[NewEvent]]]:
        for i in range(n_sandboxes):
            sid = f"{i:016x}"
            shift = timedelta(seconds=i)
            stream = []
            for e in template:
                data = dict(e.data)
                if "snapshot_key" in data:
                    data["snapshot_key"] = data["snapshot_key"].replace("tmpl", sid)
                if "conversation_id" in data:
                    data["conversation_id"] = f"conv-{i}"
                stream.append(replace(e, data=data, occurred_at=e.occurred_at + shift))
            yield sid, stream

    return bulk_insert(store_url, streams())


def measure(label: str, url: str, n_events: int) -> float:
    """Rebuild in one process and in parallel partitions, side by side on the same log."""
    migrate.upgrade(url)
    t0 = time.perf_counter()
    written = fill(url, n_events)
    print(f"[{label}] wrote {written:,} events in {time.perf_counter() - t0:.1f}s (not timed below)")
    best = 0.0
    results: dict[int, list[Projection]] = {}
    for workers in (1, default_workers()):
        t0 = time.perf_counter()
        results[workers] = parallel_rebuild(url, Policy(), workers)
        elapsed = time.perf_counter() - t0
        rate = written / elapsed
        best = max(best, rate)
        print(
            f"[{label}] {workers} process(es): rebuilt {len(results[workers]):,} projections from "
            f"{written:,} events in {elapsed:.2f}s: {rate:,.0f} events/s"
        )
    one, many = results[1], results[default_workers()]
    assert sorted(one, key=lambda p: p.row.id) == sorted(many, key=lambda p: p.row.id), "partitions disagree"
    store = open_store(url)
    t0 = time.perf_counter()
    store.replace_all_projections(many)
    print(f"[{label}] wrote them back in {time.perf_counter() - t0:.2f}s")
    store.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("SANDBOX_TEST_PG_URL"),
        help="a Postgres server to measure on too (a private schema is created and dropped)",
    )
    args = parser.parse_args()
    target = 200_000
    with tempfile.TemporaryDirectory() as tmp:
        rate = measure("sqlite", f"sqlite:///{tmp}/bench.db", args.events)
        print(f"[sqlite] {rate / target:.2f}x the 200,000 events/s target")
    if args.pg_url:
        with private_pg_schema(args.pg_url, "bench_rebuild") as url:
            rate = measure("postgres", url, args.events)
        print(f"[postgres] {rate / target:.2f}x the 200,000 events/s target")


if __name__ == "__main__":
    main()
