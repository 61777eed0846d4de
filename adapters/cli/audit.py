"""The CLI verbs that read the log as an auditor or an integration does: `events`, `relay`, `audit verify`.

They only read the log (the relay writes its checkpoint): no provider is built, so they run without
provider credentials.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from sandbox_lifecycle.core.errors import ConfigError

# The `add` helper of commands.build_parser: (name, fn, help, json_flag) -> the verb's parser.
AddVerb = Callable[..., argparse.ArgumentParser]


def _settings(args: argparse.Namespace) -> Any:
    from sandbox_lifecycle.adapters.settings import Settings

    if getattr(args, "settings", None) is None:
        args.settings = Settings.from_env()
    return args.settings


def _service(args: argparse.Namespace) -> Any:
    from sandbox_lifecycle.adapters.bootstrap import build_service

    return build_service(settings=_settings(args), require_provider=False)


def _stop_on_signals() -> threading.Event:
    """A stop flag set by SIGTERM or SIGINT, so a followed feed ends between two events."""
    stop = threading.Event()

    def handle(_signum: int, _frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    return stop


def _after(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a feed position (an integer >= 0), got {raw!r}")
    return value


def _attempts(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, got {raw!r}")
    return int(raw)


def cmd_events(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.core.feed import event_json

    service = _service(args)
    stop = _stop_on_signals() if args.follow else None
    for event in service.events(args.after, args.follow, sandbox_id=args.sandbox, stop=stop):
        if args.json:
            print(json.dumps(event_json(event), separators=(",", ":")), flush=True)
            continue
        meta = event.metadata
        when = event.occurred_at.isoformat(timespec="milliseconds")
        print(
            f"{event.position:>8}  {when:29}  {event.stream_id:16}  {event.version:>4}  {event.type:22}  "
            f"{meta.get('reason', '-'):14}  {meta.get('actor', '-')}",
            flush=True,
        )
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.adapters.bootstrap import build_store
    from sandbox_lifecycle.adapters.relay import RetryPolicy, WebhookRelay
    from sandbox_lifecycle.events.checkpoints import Checkpoints

    settings = _settings(args)
    if not settings.webhook_secret:
        raise ConfigError("SANDBOX_WEBHOOK_SECRET is not set: the relay signs every delivery with it")
    store = build_store(settings)
    stop = _stop_on_signals()
    relay = WebhookRelay(
        store,
        Checkpoints(store.engine),
        args.webhook,
        settings.webhook_secret.encode(),
        name=args.name,
        retry=RetryPolicy(attempts=args.attempts),
        stop=stop,
    )
    try:
        delivered = relay.run(follow=not args.once)
    finally:
        store.close()
    print(f"relay {args.name}: delivered {delivered} event(s)", file=sys.stderr)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.core.audit import verify_chains

    report = verify_chains(_service(args).store)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "streams": report.streams,
                    "events": report.events,
                    "broken": [
                        {"stream_id": b.stream_id, "version": b.version, "detail": b.detail}
                        for b in report.broken
                    ],
                },
                indent=2,
            )
        )
    else:
        for broken in report.broken:
            print(broken)
    if report.broken:
        print(f"{len(report.broken)} stream(s) with a broken hash chain", file=sys.stderr)
        return 1
    if not args.json:
        print(f"hash chains intact ({report.streams} streams, {report.events} events)")
    return 0


def chain_problems(store: Any) -> list[str]:
    """What `replay --verify` adds to its projection check: each stream whose chain is broken."""
    from sandbox_lifecycle.core.audit import verify_chains

    return [str(b) for b in verify_chains(store, ends=False).broken]


def register(add: AddVerb, sub: Any) -> None:
    sp = add("events", cmd_events, "print the event log in commit order (--follow to tail it)")
    sp.add_argument("--follow", "-f", action="store_true", help="wait for new events (SIGINT/SIGTERM stop)")
    sp.add_argument("--after", type=_after, default=0, metavar="N", help="start after feed position N")
    sp.add_argument("--sandbox", metavar="ID", help="only this sandbox's events")
    sp = add(
        "relay",
        cmd_relay,
        "post every event to a webhook, signed, in order, at least once; resumes from its checkpoint",
        False,
    )
    sp.add_argument("--webhook", required=True, metavar="URL", help="where each event is POSTed")
    sp.add_argument("--name", default="webhook", help="the checkpoint's name (one per receiver)")
    sp.add_argument(
        "--attempts", type=_attempts, default=8, help="tries per event before the relay stops (1-100)"
    )
    sp.add_argument("--once", action="store_true", help="deliver what is in the log now, then exit")
    audit = sub.add_parser("audit", help="verify the history", description="verify the history")
    audit_sub = audit.add_subparsers(dest="auditcmd", required=True)
    sp = audit_sub.add_parser(
        "verify",
        help="recompute every stream's hash chain; name each tampered stream and its first bad version",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(fn=cmd_audit_verify)
