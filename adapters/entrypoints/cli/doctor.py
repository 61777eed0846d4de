"""`sandboxctl doctor [--json]`: is everything this deployment needs there, and what to do when not.

Each check returns one :class:`Check`; a failing one says what to do. The checks every deployment needs
are here; the chosen provider brings its own (its registry entry's ``doctor`` module: ``CHECKS`` run after
the provider check, ``SLOTS`` fill the named slots below). :func:`register_check` replaces a slot's
check or adds one. Exit 1 when any check fails.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

from sandbox_lifecycle.adapters.composition.bootstrap import (
    build_provider,
    build_snapshot_store,
    database_unreachable,
    head_revision,
)
from sandbox_lifecycle.adapters.composition.scrubbing import first_line, scrub
from sandbox_lifecycle.adapters.composition.settings import Settings, sqlite_path
from sandbox_lifecycle.adapters.observability.health import (
    FAIL,
    NOT_CONFIGURED,
    OK,
    WARN,
    Check,
    CheckFn,
    Context,
)
from sandbox_lifecycle.adapters.providers import registry
from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.events import revision
from sandbox_lifecycle.events.names import redact_url
from sandbox_lifecycle.events.store import open_store

__all__ = [
    "FAIL",
    "NOT_CONFIGURED",
    "OK",
    "WARN",
    "Check",
    "CheckFn",
    "Context",
    "register_check",
    "run_doctor",
]

# The sandboxes' way out, which every provider answers for (its entry's SLOTS); a check registered here
# replaces the provider's.
_PLUGGED: dict[str, CheckFn | None] = {"egress point": None, "gateway": None}


def register_check(name: str, check: CheckFn) -> None:
    """Add a check, or fill one of the named slots ("egress point", "gateway")."""
    _PLUGGED[name] = check


def check_database(ctx: Context) -> Check:
    url = ctx.settings.database_url
    where = redact_url(url)
    try:
        current = revision.current_revision(url, sqlite_path(url) if url.startswith("sqlite") else None)
    except Exception as exc:
        return Check(
            "database",
            FAIL,
            database_unreachable(ctx.settings, exc),
            "check SANDBOX_DATABASE_URL, that the server is up and that this host may connect",
        )
    head = head_revision()
    if current != head:
        return Check(
            "database",
            FAIL,
            f"{where} is at schema revision {current or 'none'}, this release needs {head}",
            "run `sandboxctl db upgrade`",
        )
    ctx.store = open_store(url)
    count = len(ctx.store.list_sandboxes())
    return Check("database", OK, f"{where} at revision {head}, {count} sandboxes")


def check_provider(ctx: Context) -> Check:
    s = ctx.settings
    entry = registry.entry(s.provider)
    try:
        provider = build_provider(s)
        instances = provider.list_instances()
    except Exception as exc:
        return Check("provider", FAIL, f"{entry.label}: {first_line(str(exc))}", entry.unreachable_fix)
    ctx.provider = provider
    return Check(
        "provider", OK, f"{entry.label} reachable, {len(instances)} instances of deployment {s.deployment}"
    )


def check_snapshots(ctx: Context) -> Check:
    s = ctx.settings
    kept_by_provider = registry.entry(s.provider).native_snapshots
    if kept_by_provider:
        return Check("snapshot store", OK, kept_by_provider)
    where = f"s3://{s.s3_bucket}" if s.s3_bucket else str(s.snapshot_dir)
    try:
        store = build_snapshot_store(s)
        key = f"doctor-probe-{uuid.uuid4().hex}"
        store.put(key, io.BytesIO(b"sandboxctl doctor"))
        store.delete(key)
    except Exception as exc:
        fix = (
            "check S3_BUCKET, the endpoint and that the credentials may write and delete there"
            if s.s3_bucket
            else "make SANDBOX_SNAPSHOT_DIR a directory this user can write"
        )
        return Check("snapshot store", FAIL, f"{where}: {first_line(str(exc))}", fix)
    return Check("snapshot store", OK, f"{where} writable")


def check_scheduler(ctx: Context) -> Check:
    if ctx.store is None:
        return Check("scheduler", FAIL, "skipped: the database is not usable", "fix the database first")
    due = ctx.store.next_deadline()
    if due is None:
        return Check("scheduler", OK, "no timer armed")
    lag = (datetime.now(UTC) - due).total_seconds()
    interval = ctx.settings.sweep_interval.total_seconds()
    if lag <= 2 * interval:
        return Check(
            "scheduler",
            OK,
            f"oldest deadline due {due.isoformat(timespec='seconds')}, lag {max(lag, 0):.0f}s",
        )
    return Check(
        "scheduler",
        FAIL,
        f"a deadline has been due for {lag:.0f}s (sweep interval {interval:g}s): no scheduler is keeping up",
        "run `sandboxctl scheduler` (or run_scheduler() in the backend) on at least one replica",
    )


def provider_checks(settings: Settings) -> tuple[tuple[CheckFn, ...], dict[str, CheckFn]]:
    """The chosen provider's own checks and slot checks, from its registry entry."""
    name = registry.entry(settings.provider).doctor_module
    if name is None:
        return (), {}
    module = importlib.import_module(name)
    return tuple(getattr(module, "CHECKS", ())), dict(getattr(module, "SLOTS", {}))


def run_checks(settings: Settings) -> list[Check]:
    ctx = Context(settings)
    own, slots = provider_checks(settings)
    results = []
    checks = (check_database, check_provider, *own, check_snapshots, check_scheduler, *_slot_checks(slots))
    for fn in checks:
        try:
            found = fn(ctx)
            if found is not None:
                results.append(found)
        except Exception as exc:  # a check's own bug must not hide the other checks
            name = getattr(fn, "check_name", fn.__name__.removeprefix("check_").replace("_", " "))
            results.append(Check(name, FAIL, f"{type(exc).__name__}: {first_line(str(exc))}", None))
    if ctx.store is not None:
        ctx.store.close()
    secrets = settings.secrets()
    return [
        Check(c.name, c.status, scrub(c.detail, secrets), scrub(c.fix, secrets) if c.fix else None)
        for c in results
    ]


def _slot_checks(provided: dict[str, CheckFn]) -> list[CheckFn]:
    out: list[CheckFn] = []
    for name, fn in _PLUGGED.items():
        found = fn or provided.get(name)
        if found is None:

            def absent(ctx: Context, name: str = name) -> Check:
                return Check(name, NOT_CONFIGURED, "no check installed for it in this build")

            absent.check_name = name  # type: ignore[attr-defined]
            found = absent
        out.append(found)
    return out


def run_doctor(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Settings]) -> int:
    try:
        settings = settings_of(args)
    except ConfigError as exc:
        checks = [Check("settings", FAIL, str(exc), "fix the variables named above")]
    else:
        checks = [Check("settings", OK, ", ".join(f"{k}={v}" for k, v in settings.describe().items()))]
        checks += run_checks(settings)
    failed = any(c.status == FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{c.name:16} {c.status.upper() if c.status == FAIL else c.status:15} {c.detail}")
            if c.fix and c.status != OK:
                print(f"{'':16} {'':15} -> {c.fix}")
    return 1 if failed else 0
