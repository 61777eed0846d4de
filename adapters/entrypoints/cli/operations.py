"""The operator's verbs: `replay`, `sweep`, `reconcile`, `scheduler`, `db upgrade`, `diagram`, `doctor`,
`demo`. Loaded only when one of them runs (``commands.VERBS``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sandbox_lifecycle.adapters.composition.bootstrap import build_store
from sandbox_lifecycle.adapters.entrypoints.cli.audit import chain_problems
from sandbox_lifecycle.adapters.entrypoints.cli.context import Usage, service_of, settings_of
from sandbox_lifecycle.adapters.entrypoints.cli.doctor import run_doctor
from sandbox_lifecycle.adapters.entrypoints.cli.render import print_report
from sandbox_lifecycle.adapters.observability.serve import serve_metrics
from sandbox_lifecycle.core import lifecycle
from sandbox_lifecycle.core.kinds import KINDS
from sandbox_lifecycle.core.replay import verify

# The `add` helper of commands.build_parser: (name, fn, help, json_flag=True) -> the verb's parser.
AddVerb = Callable[..., argparse.ArgumentParser]


def cmd_replay(args: argparse.Namespace) -> int:
    # Imported here: multiprocessing and its pool take about 0.1 s to load, and only replay folds the
    # log in parallel.
    from sandbox_lifecycle.adapters.entrypoints.rebuild import parallel_rebuild

    service = service_of(args)
    projections = parallel_rebuild(settings_of(args).database_url, service.policy, args.workers)
    if args.rebuild:
        service.store.replace_all_projections(projections)
        print(f"rebuilt projections of {len(projections)} sandboxes from the log")
    diffs = verify(service.store, service.policy, rebuilt=projections)
    diffs = [*diffs, *chain_problems(service.store)]
    for d in diffs:
        print(d)
    if diffs:
        print(f"{len(diffs)} difference(s) between the log and the stored projections", file=sys.stderr)
        return 1
    print(f"projections match the log ({len(projections)} sandboxes)")
    return 0


def _parse_now(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise Usage(f"--now must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got {raw!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_sweep(args: argparse.Namespace) -> int:
    now = _parse_now(args.now)  # a usage error before any setting or connection is looked at
    report = service_of(args).sweep(now)
    print_report(report, args.json)
    return 1 if report.errors else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    report = service_of(args).reconcile()
    print_report(report, args.json)
    return 1 if report.errors else 0


def cmd_recover(args: argparse.Namespace) -> int:
    done = service_of(args).recover(args.id)
    if args.json:
        print(json.dumps(asdict(done), indent=2))
    else:
        for action in done.actions:
            print(action)
        if not done.actions:
            print("nothing to do: the log and the provider agree")
        print(f"{done.sandbox_id}: {done.before} -> {done.state}")
    return 1 if done.error else 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    # Imported here: APScheduler with asyncio takes about 0.25 s to load, for this verb alone.
    from sandbox_lifecycle.adapters.entrypoints.scheduler import run_forever

    service = service_of(args)
    if args.metrics_port is not None:
        serve_metrics(service, settings_of(args), args.metrics_port, args.metrics_host)
    run_forever(service, settings_of(args).sweep_interval)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    # Imported here: alembic takes about 0.3 s to load, for this verb alone.
    from sandbox_lifecycle.events import migrate

    settings = settings_of(args)
    if settings.database_url.startswith("sqlite"):
        build_store(settings, migrate_embedded=False)  # creates the data dir
    migrate.upgrade(settings.database_url)
    print(f"database at revision {migrate.current(settings.database_url)}")
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    print(lifecycle.mermaid())
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    return run_doctor(args, settings_of)


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo's uuid and hashlib take about 20 ms to load, for this verb alone.
    from sandbox_lifecycle.adapters.entrypoints.cli.demo import run_demo

    return run_demo(service_of(args), kind=args.kind)


def _replay_verb(add: AddVerb, sub: Any) -> None:
    sp = add(
        "replay", cmd_replay, "rebuild projections from the log and compare them with the stored ones", False
    )
    mode = sp.add_mutually_exclusive_group()
    mode.add_argument(
        "--verify", action="store_true", help="compare only (the default); exit 1 on any difference"
    )
    mode.add_argument(
        "--rebuild",
        action="store_true",
        help="overwrite the stored projections with the rebuild, then compare",
    )
    sp.add_argument(
        "--workers", type=int, help="processes folding the log in parallel (default: cores, max 4)"
    )


def _sweep_verb(add: AddVerb, sub: Any) -> None:
    sp = add("sweep", cmd_sweep, "fire every due timer and reconcile once")
    sp.add_argument("--now", help="pretend it is this ISO time (tests, catching up)")


def _reconcile_verb(add: AddVerb, sub: Any) -> None:
    add("reconcile", cmd_reconcile, "re-drive stuck transitions and remove orphans once")


def _recover_verb(add: AddVerb, sub: Any) -> None:
    sp = add(
        "recover",
        cmd_recover,
        "re-drive one stuck or failed sandbox now: take over its side effect, record what the provider holds",
    )
    sp.add_argument("id")


def _scheduler_verb(add: AddVerb, sub: Any) -> None:
    sp = add(
        "scheduler", cmd_scheduler, "run the timer ticker in the foreground (SIGTERM/SIGINT stop it)", False
    )
    sp.add_argument("--metrics-port", type=int, help="serve Prometheus metrics at :PORT/metrics")
    sp.add_argument("--metrics-host", default="127.0.0.1", help="address to serve them on (127.0.0.1)")


def _db_verb(add: AddVerb, sub: Any) -> None:
    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="dbcmd", required=True)
    dbsub.add_parser("upgrade", help="migrate the database to this release's schema").set_defaults(
        fn=cmd_db_upgrade
    )


def _diagram_verb(add: AddVerb, sub: Any) -> None:
    add("diagram", cmd_diagram, "print the lifecycle as a Mermaid state diagram", False)


def _doctor_verb(add: AddVerb, sub: Any) -> None:
    add("doctor", cmd_doctor, "check settings, database, provider, images, snapshot store and scheduler")


def _demo_verb(add: AddVerb, sub: Any) -> None:
    sp = add("demo", cmd_demo, "two turns of a conversation on real sandboxes, then the history", False)
    sp.add_argument("--kind", default="data-app", choices=sorted(KINDS))


# Each verb and what adds it to the parser: (add, the subparsers action) -> None.
VERBS: dict[str, Callable[[AddVerb, Any], None]] = {
    "replay": _replay_verb,
    "sweep": _sweep_verb,
    "reconcile": _reconcile_verb,
    "recover": _recover_verb,
    "scheduler": _scheduler_verb,
    "db": _db_verb,
    "diagram": _diagram_verb,
    "doctor": _doctor_verb,
    "demo": _demo_verb,
}
