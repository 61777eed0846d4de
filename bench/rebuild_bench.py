"""Rebuild every projection from a log of N events (default 1,000,000) and print events/s.

    .venv/bin/python bench/rebuild_bench.py [--events N] [--pg-url postgresql+psycopg://...]

The log is realistic: each sandbox lives create → turns (activity, suspend, resume) → retention GC, as the
decider emits it. Events are bulk-inserted (that part is not timed); the rebuild reads the log in commit
order through the store, decodes, folds and projects, exactly as `sandboxctl replay --rebuild` does.
Target: >= 200,000 events/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from core import sandbox as sb
from core.projection import Policy
from core.replay import rebuild
from events import migrate
from events.codec import encode
from events.store import SqlEventStore
from events.tables import events as events_table


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
    do(sb.FireRetention(retention=timedelta(days=7)))
    do(sb.MarkDestroyed(reason="retention"))
    return out


def fill(store_url: str, n_events: int) -> int:
    template = [encode(e) for e in lifecycle_template(turns=3)]
    per = len(template)
    n_sandboxes = n_events // per
    engine = sa.create_engine(store_url)
    rows: list[dict[str, Any]] = []
    written = 0
    with engine.begin() as conn:
        for i in range(n_sandboxes):
            sid = f"{i:016x}"
            shift = timedelta(seconds=i)
            for v, e in enumerate(template, start=1):
                data = dict(e.data)
                if "snapshot_key" in data:
                    data["snapshot_key"] = data["snapshot_key"].replace("tmpl", sid)
                if "conversation_id" in data:
                    data["conversation_id"] = f"conv-{i}"
                rows.append(
                    {
                        "stream_id": sid,
                        "version": v,
                        "type": e.type,
                        "schema_version": e.schema_version,
                        "data": data,
                        "meta": e.metadata,
                        "occurred_at": e.occurred_at + shift,
                        "idempotency_key": None,
                    }
                )
            if len(rows) >= 20_000:
                conn.execute(events_table.insert(), rows)
                written += len(rows)
                rows.clear()
        if rows:
            conn.execute(events_table.insert(), rows)
            written += len(rows)
    engine.dispose()
    return written


def measure(label: str, url: str, n_events: int) -> float:
    migrate.upgrade(url)
    t0 = time.perf_counter()
    written = fill(url, n_events)
    print(f"[{label}] wrote {written:,} events in {time.perf_counter() - t0:.1f}s (not timed below)")
    store = SqlEventStore(url)
    t0 = time.perf_counter()
    projections = rebuild(store, Policy())
    elapsed = time.perf_counter() - t0
    rate = written / elapsed
    print(f"[{label}] rebuilt {len(projections):,} projections from {written:,} events in {elapsed:.2f}s: {rate:,.0f} events/s")
    t0 = time.perf_counter()
    store.replace_all_projections(projections)
    print(f"[{label}] wrote them back in {time.perf_counter() - t0:.2f}s")
    store.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--pg-url", help="an EMPTY Postgres database to fill (its tables are dropped first)")
    args = parser.parse_args()
    target = 200_000
    with tempfile.TemporaryDirectory() as tmp:
        rate = measure("sqlite", f"sqlite:///{tmp}/bench.db", args.events)
        print(f"[sqlite] {rate / target:.2f}x the 200,000 events/s target")
    if args.pg_url:
        engine = sa.create_engine(args.pg_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS events, sandboxes, sandbox_deadlines, alembic_version")
        engine.dispose()
        rate = measure("postgres", args.pg_url, args.events)
        print(f"[postgres] {rate / target:.2f}x the 200,000 events/s target")


if __name__ == "__main__":
    main()
