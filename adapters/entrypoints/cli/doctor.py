"""`sandboxctl doctor [--json]`: is everything this deployment needs there, and what to do when not.

Each check returns one :class:`Check`; a failing one says what to do. The egress point and the model
gateway are checked by ``doctor_network``; :func:`register_check` replaces a slot's check or adds one.
Exit 1 when any check fails.
"""

from __future__ import annotations

import argparse
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sandbox_lifecycle.adapters.composition.settings import Settings, first_line, scrub
from sandbox_lifecycle.core.kinds import KINDS

OK, FAIL, WARN, NOT_CONFIGURED = "ok", "fail", "warn", "not configured"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


@dataclass
class Context:
    """What the checks share: settings, and what earlier checks built (so later ones can skip)."""

    settings: Settings
    store: Any = None
    provider: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


CheckFn = Callable[[Context], Check | None]  # None: the check does not apply here

# Slots whose check lives elsewhere; None: doctor_network's (imported when the checks run, it needs Check).
_PLUGGED: dict[str, CheckFn | None] = {"egress point": None, "gateway": None}


def register_check(name: str, check: CheckFn) -> None:
    """Add a check, or fill one of the named slots ("egress point", "gateway")."""
    _PLUGGED[name] = check


def check_database(ctx: Context) -> Check:
    from sandbox_lifecycle.adapters.composition.bootstrap import _head_revision, database_unreachable
    from sandbox_lifecycle.adapters.composition.settings import sqlite_path
    from sandbox_lifecycle.events import revision
    from sandbox_lifecycle.events.names import redact_url

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
    head = _head_revision()
    if current != head:
        return Check(
            "database",
            FAIL,
            f"{where} is at schema revision {current or 'none'}, this release needs {head}",
            "run `sandboxctl db upgrade`",
        )
    from sandbox_lifecycle.events.store import open_store

    ctx.store = open_store(url)
    count = len(ctx.store.list_sandboxes())
    return Check("database", OK, f"{where} at revision {head}, {count} sandboxes")


def check_provider(ctx: Context) -> Check:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_provider

    s = ctx.settings
    what = "Docker engine" if s.provider == "docker" else "E2B"
    try:
        provider = build_provider(s)
        instances = provider.list_instances()
    except Exception as exc:
        fix = (
            "start the Docker engine (or point DOCKER_HOST at one) and make sure this user may use it"
            if s.provider == "docker"
            else "set E2B_API_KEY to a valid key (https://e2b.dev/dashboard?tab=keys); check E2B_API_URL"
        )
        return Check("provider", FAIL, f"{what}: {first_line(str(exc))}", fix)
    ctx.provider = provider
    return Check("provider", OK, f"{what} reachable, {len(instances)} instances of deployment {s.deployment}")


def check_images(ctx: Context) -> Check:
    s = ctx.settings
    if s.provider != "docker":
        templates = ", ".join(f"{k}={t}" for k, t in sorted(s.e2b.templates.items()))
        return Check(
            "templates",
            WARN,
            f"not looked up ({templates}); a missing template fails the first create naming it",
            "build them with the E2B CLI if a create reports the template missing",
        )
    if ctx.provider is None:
        return Check("images", FAIL, "skipped: the Docker engine is unreachable", "fix the provider first")
    import docker
    import docker.errors

    client = docker.from_env()
    missing = []
    try:
        for kind in sorted(KINDS):
            image = s.docker_images[kind]
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                missing.append(f"{image} ({kind})")
    finally:
        client.close()
    if missing:
        return Check(
            "images",
            FAIL,
            f"missing: {', '.join(missing)}",
            "build or pull them, or point SANDBOX_DOCKER_IMAGE / SANDBOX_AI_WRITEBACK_DOCKER_IMAGE elsewhere",
        )
    return Check("images", OK, ", ".join(f"{k}={s.docker_images[k]}" for k in sorted(KINDS)))


def check_snapshots(ctx: Context) -> Check:
    s = ctx.settings
    if s.provider == "e2b":
        return Check("snapshot store", OK, "kept by E2B (native pause)")
    from sandbox_lifecycle.adapters.composition.bootstrap import build_snapshot_store

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


def check_engine(ctx: Context) -> Check | None:
    """The engine facts the Docker provider relies on, read as a first-start engine reports them (None:
    no engine is used, so there is nothing to say)."""
    s = ctx.settings
    if s.provider != "docker":
        return None
    if ctx.provider is None:
        return Check("engine", FAIL, "skipped: the Docker engine is unreachable", "fix the provider first")
    import docker

    from sandbox_lifecycle.adapters.providers.docker.bridge import (
        DEFAULT_BRIDGE,
        BridgeAddressUnknown,
        bridge_host_address,
    )

    client = docker.from_env()
    try:
        info = client.api.info()
        bridge = client.api.inspect_network(DEFAULT_BRIDGE)
    finally:
        client.close()
    runtimes = ", ".join(sorted(info.get("Runtimes") or {})) or "none reported"
    facts = (
        f"docker {info.get('ServerVersion', '?')}, storage {info.get('Driver', '?')}, "
        f"runtime {info.get('DefaultRuntime', '?')} (available: {runtimes})"
    )
    reported = any(c.get("Gateway") for c in (bridge.get("IPAM") or {}).get("Config") or [])
    try:
        address = bridge_host_address(bridge)
    except BridgeAddressUnknown as exc:
        # Only a model or git server on this host needs it (a loopback ANTHROPIC_BASE_URL, the demo).
        loopback = urlsplit(s.anthropic_base_url).hostname in ("127.0.0.1", "localhost", "::1")
        return Check(
            "engine",
            FAIL if loopback else WARN,
            f"{facts}; host address on the default bridge unknown: {exc}",
            "run the backend on the engine's host, in its network namespace; or point ANTHROPIC_BASE_URL "
            "at a server sandboxes reach without it",
        )
    source = "reported by the engine" if reported else "read from the bridge interface (a first-start engine)"
    return Check("engine", OK, f"{facts}; host address on the default bridge {address}, {source}")


CHECKS: tuple[CheckFn, ...] = (
    check_database,
    check_provider,
    check_engine,
    check_images,
    check_snapshots,
    check_scheduler,
)


def run_checks(settings: Settings) -> list[Check]:
    ctx = Context(settings)
    results = []
    for fn in (*CHECKS, *_slot_checks()):
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


def _slot_checks() -> list[CheckFn]:
    from sandbox_lifecycle.adapters.entrypoints.cli.doctor_network import SLOT_CHECKS

    out: list[CheckFn] = []
    for name, fn in _PLUGGED.items():
        found = fn or SLOT_CHECKS.get(name)
        if found is None:

            def absent(ctx: Context, name: str = name) -> Check:
                return Check(name, NOT_CONFIGURED, "no check installed for it in this build")

            absent.check_name = name  # type: ignore[attr-defined]
            found = absent
        out.append(found)
    return out


def run_doctor(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Settings]) -> int:
    from sandbox_lifecycle.core.errors import ConfigError

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
