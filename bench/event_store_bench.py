"""Append throughput of our event store against the eventsourcing library's own recorders.

One event per transaction with the optimistic concurrency check (ours: expected version; eventsourcing:
its (originator_id, originator_version) primary key), on the same Postgres server and the same disk.
Each run writes to fresh tables (a throwaway Postgres schema, fresh SQLite files) so both sides start
equal. Not a test: run it by hand.

    .venv/bin/python bench/event_store_bench.py [--pg-url URL] [-n 10000] [--rounds 3]
    .venv/bin/python bench/event_store_bench.py --against REV   # ours now vs ours at git revision REV

``--against`` measures what a change to the append costs (the hash chain: ``--against 0b315c0``): the
store classes of REV (events/store/base.py, sqlite.py and postgres.py from git) and of the working tree append
to the same schema side by side in one run, in alternating batches; the ratios of their median costs
per append (wall and this process's CPU) are printed.

The Postgres URL defaults to SANDBOX_TEST_PG_URL, then the one scripts/start-postgres.sh prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteConnection, SQLiteDatastore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox_lifecycle.events.migrate import upgrade
from sandbox_lifecycle.events.records import NewEvent
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from sandbox_lifecycle.events.store.postgres import PostgresEventStore
from sandbox_lifecycle.events.store.sqlite import SqliteEventStore

DEFAULT_PG_URL = "postgresql+psycopg://sandbox:sandbox@127.0.0.1:5432/sandbox_test"
STREAMS = 100
WARMUP = 200
DATA = {"sandbox_id": "sbx-0123456789abcdef", "kind": "data-app", "actor": "bench", "reason": "activity"}
TOPIC = "sandbox_lifecycle.events.SandboxTouched"


def _plan(n: int) -> list[tuple[str, int]]:
    """(stream id, version) of n appends spread round-robin over STREAMS streams."""
    run = uuid.uuid4().hex[:8]
    return [(f"sbx-{run}-{i % STREAMS}", i // STREAMS + 1) for i in range(n)]


def _rate(n: int, append: Callable[[str, int], None]) -> float:
    for stream, version in _plan(WARMUP):
        append(stream, version)
    plan = _plan(n)
    started = time.perf_counter()
    for stream, version in plan:
        append(stream, version)
    return n / (time.perf_counter() - started)


def ours(url: str, n: int, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> float:
    upgrade(url)
    store = open_store(url, sqlite_synchronous=synchronous)
    now = datetime.now(UTC)
    try:
        return _rate(n, lambda s, v: store.append(s, v - 1, [NewEvent("SandboxTouched", DATA, now)]) and None)
    finally:
        store.close()


def _git_show(rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{rev}:{path}"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _module_at(rev: str, path: str, name: str, replace: dict[str, str]) -> types.ModuleType:
    source = _git_show(rev, path)
    for old, new in replace.items():
        source = source.replace(old, new)
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and typing look modules up by name
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def _store_at(rev: str, backend: Literal["sqlite", "postgres"]) -> type[SqlEventStore]:
    """The store class of ``backend`` as git revision ``rev`` wrote it, on that revision's base module
    (today's records and tables): the whole append path of then, not a mix."""
    base = f"bench_base_{rev}"
    if base not in sys.modules:
        _module_at(rev, "events/store/base.py", base, {})
    module = _module_at(
        rev,
        f"events/store/{backend}.py",
        f"bench_{backend}_{rev}",
        {"sandbox_lifecycle.events.store.base": base},
    )
    name = "SqliteEventStore" if backend == "sqlite" else "PostgresEventStore"
    cls: type[SqlEventStore] = getattr(module, name)
    return cls


class _Appender:
    """One store appending round-robin over its own STREAMS streams, a batch at a time."""

    def __init__(self, cls: type[SqlEventStore], url: str) -> None:
        upgrade(url)
        self.store = cls(url)
        self.run = uuid.uuid4().hex[:8]
        self.done = 0
        self.now = datetime.now(UTC)

    def batch(self, n: int) -> tuple[float, float]:
        """Wall and CPU seconds of ``n`` more appends."""
        append, now, run = self.store.append, self.now, self.run
        cpu, started = time.process_time(), time.perf_counter()
        for i in range(self.done, self.done + n):
            append(f"sbx-{run}-{i % STREAMS}", i // STREAMS, [NewEvent("SandboxTouched", DATA, now)])
        self.done += n
        return time.perf_counter() - started, time.process_time() - cpu


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def against(pg_url: str, rev: str, n: int, batch: int) -> None:
    """Ours now against ours at ``rev``: both stores open side by side (same server, same disk), in
    batches of ``batch`` appends that alternate between them, so a machine whose load drifts (other
    work, CPU frequency) weighs on both alike. Medians of the per-batch costs are compared."""
    old = {b: _store_at(rev, b) for b in ("sqlite", "postgres")}
    new = {"sqlite": SqliteEventStore, "postgres": PostgresEventStore}
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    schemas = {"now": "bench_against_now", rev: "bench_against_then"}
    with admin.connect() as conn:
        for schema in schemas.values():
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    results: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend, key in (("pg", "postgres"), ("sqlite", "sqlite")):
            appenders: dict[str, _Appender] = {}
            for label, classes in (("now", new), (rev, old)):
                if backend == "pg":
                    url = sa.make_url(pg_url).update_query_dict(
                        {"options": f"-csearch_path={schemas[label]}"}
                    )
                    target = url.render_as_string(hide_password=False)
                else:
                    target = f"sqlite:///{tmp}/{label}.db"
                appenders[label] = _Appender(classes[key], target)
                appenders[label].batch(WARMUP)
            wall: dict[str, list[float]] = {"now": [], rev: []}
            cpu: dict[str, list[float]] = {"now": [], rev: []}
            for b in range(max(n // batch, 1)):
                for label in ("now", rev) if b % 2 == 0 else (rev, "now"):
                    w, c = appenders[label].batch(batch)
                    wall[label].append(w / batch * 1e6)
                    cpu[label].append(c / batch * 1e6)
            for appender in appenders.values():
                appender.store.close()
            w_now, w_then = _median(wall["now"]), _median(wall[rev])
            c_now, c_then = _median(cpu["now"]), _median(cpu[rev])
            results.append(
                f"  {backend:<7} wall {w_now:6.1f} vs {w_then:6.1f} us/append  ratio {w_now / w_then:.3f}x   "
                f"client CPU {c_now:6.1f} vs {c_then:6.1f} us/append  ratio {c_now / c_then:.3f}x"
            )
            print(results[-1], flush=True)
    with admin.connect() as conn:
        for schema in schemas.values():
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()
    print(
        f"\nn={n} appends each, 1 event per transaction, alternating batches of {batch}; "
        f"medians, now vs {rev}:"
    )
    print("\n".join(results))


def _encoded() -> bytes:
    return json.dumps(DATA).encode()


def theirs_pg(url: str, schema: str, n: int) -> float:
    u = sa.make_url(url)
    datastore = PostgresDatastore(
        dbname=u.database or "",
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "",
        password=u.password or "",
        schema=schema,
        originator_id_type="text",
    )
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()
    state = _encoded()
    try:
        return _rate(n, lambda s, v: recorder.insert_events([StoredEvent(s, v, TOPIC, state)]) and None)
    finally:
        datastore.close()


def theirs_sqlite(path: str, n: int, synchronous: str | None = None) -> float:
    """``synchronous`` None keeps the library's setting (SQLite's default, FULL)."""
    datastore = SQLiteDatastore(path, originator_id_type="text")
    if synchronous is not None:
        create = datastore.pool._create_connection

        def create_with_pragma() -> SQLiteConnection:
            conn = create()
            conn._sqlite_conn.execute(f"PRAGMA synchronous = {synchronous}")
            return conn

        datastore.pool._create_connection = create_with_pragma  # type: ignore[method-assign]
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    state = _encoded()
    try:
        return _rate(n, lambda s, v: recorder.insert_events([StoredEvent(s, v, TOPIC, state)]) and None)
    finally:
        datastore.close()


# (label, ours, theirs): what each printed ratio compares.
COMPARISONS = [
    ("postgres", "pg ours", "pg eventsourcing"),
    ("sqlite, each default (ours NORMAL, theirs FULL)", "sqlite ours NORMAL", "sqlite eventsourcing FULL"),
    ("sqlite, both synchronous=FULL", "sqlite ours FULL", "sqlite eventsourcing FULL"),
    ("sqlite, both synchronous=NORMAL", "sqlite ours NORMAL", "sqlite eventsourcing NORMAL"),
]


def _runs(pg_url: str, tmp: str, r: int, n: int) -> list[tuple[str, Callable[[], float]]]:
    ours_url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path=bench_ours_{r}"})
    runs: list[tuple[str, Callable[[], float]]] = [
        ("pg ours", partial(ours, ours_url.render_as_string(hide_password=False), n)),
        ("pg eventsourcing", partial(theirs_pg, pg_url, f"bench_es_{r}", n)),
        ("sqlite ours NORMAL", partial(ours, f"sqlite:///{tmp}/ours-normal-{r}.db", n)),
        ("sqlite eventsourcing FULL", partial(theirs_sqlite, f"{tmp}/es-full-{r}.db", n)),
        ("sqlite ours FULL", partial(ours, f"sqlite:///{tmp}/ours-full-{r}.db", n, "FULL")),
        ("sqlite eventsourcing NORMAL", partial(theirs_sqlite, f"{tmp}/es-normal-{r}.db", n, "NORMAL")),
    ]
    # Alternate who goes first within each pair, so neither always gets the warmer server.
    if r % 2:
        runs = [runs[i ^ 1] for i in range(len(runs))]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg-url", default=os.environ.get("SANDBOX_TEST_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("-n", type=int, default=10_000, help="appends per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best of each is kept")
    parser.add_argument("--against", metavar="REV", help="compare ours now with ours at git revision REV")
    parser.add_argument("--batch", type=int, default=250, help="with --against: appends per alternation")
    args = parser.parse_args()
    if args.against:
        against(args.pg_url, args.against, args.n, args.batch)
        return

    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            schemas = (f"bench_ours_{r}", f"bench_es_{r}")
            with admin.connect() as conn:
                for schema in schemas:
                    conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                    conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            for name, run in _runs(args.pg_url, tmp, r, args.n):
                rate = run()
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {r + 1}: {name:<28} {rate:8.0f} appends/s", flush=True)
            with admin.connect() as conn:
                for schema in schemas:
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()

    print(f"\nbest of {args.rounds} rounds, n={args.n}, 1 event per transaction:")
    for label, mine, theirs in COMPARISONS:
        print(
            f"  {label:<48} ours {best[mine]:7.0f}/s  eventsourcing {best[theirs]:7.0f}/s  "
            f"ratio {best[mine] / best[theirs]:.2f}x"
        )


if __name__ == "__main__":
    main()
