"""The CLI verbs that read the log as an auditor or an integration does: `events`, `relay`, `audit verify`,
`audit head`.

They only read the log (the relay writes its checkpoint): no provider is built, so they run without
provider credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from sandbox_lifecycle.adapters.audit import signed_head as audit_head
from sandbox_lifecycle.adapters.composition.bootstrap import build_store
from sandbox_lifecycle.adapters.entrypoints.cli.context import EXIT_USAGE, service_of, settings_of
from sandbox_lifecycle.core.audit import Anchor, verify_chains
from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.core.feed import event_json
from sandbox_lifecycle.events.records import StoreError

MAX_POSITION = 2**63 - 1

# The `add` helper of commands.build_parser: (name, fn, help, json_flag) -> the verb's parser.
AddVerb = Callable[..., argparse.ArgumentParser]


def _service(args: argparse.Namespace) -> Any:
    """The audit trail is read (and relayed) without the provider's credentials."""
    return service_of(args, read_only=True)


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
    # Positions are 64-bit in both databases: a larger one would overflow the driver's bind.
    if not 0 <= value <= MAX_POSITION:
        raise argparse.ArgumentTypeError(
            f"must be a feed position (an integer from 0 to 2^63-1), got {raw!r}"
        )
    return value


def _attempts(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, got {raw!r}")
    return int(raw)


def cmd_events(args: argparse.Namespace) -> int:
    try:
        _print_events(args)
    except BrokenPipeError:
        # The reader went away (`sandboxctl events --json | head -1`): say so once, and point stdout at
        # /dev/null so the interpreter's own flush at exit does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("sandboxctl: events: the output was closed (broken pipe); stopped", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _print_events(args: argparse.Namespace) -> None:
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


def cmd_relay(args: argparse.Namespace) -> int:
    # Imported here: the checkpoints' SQLAlchemy and the relay's urllib.request take 0.1-0.4 s to load,
    # which `events`, `audit` and `replay` (that load this module) do not need.
    from sandbox_lifecycle.adapters.entrypoints.relay import RetryPolicy, WebhookRelay
    from sandbox_lifecycle.events.checkpoints import Checkpoints

    settings = settings_of(args)
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


def _pinned_key(args: argparse.Namespace) -> Any:
    """The key a head must be signed by: --public-key, else the deployment's signing key, else None."""
    if args.public_key:
        return audit_head.load_public_key(args.public_key)
    if path := os.environ.get(audit_head.KEY_ENV):
        return audit_head.load_private_key(path).public_key()
    return None


def _anchor(args: argparse.Namespace) -> Any:
    """The verified head of ``--head FILE`` (None without one); a bad file, or one signed for another
    deployment, is a usage error."""
    if args.head is None:
        return None
    try:
        raw = open(args.head, "rb").read()  # noqa: SIM115 - read whole at once
    except OSError as exc:
        raise HeadFileError(f"--head: cannot read {args.head!r}: {exc.strerror}") from None
    try:
        head = audit_head.SignedHead.from_json(raw)
        pinned = audit_head.check(head, _pinned_key(args))
    except audit_head.HeadInvalid as exc:
        raise HeadFileError(f"--head {args.head!r}: {exc}") from None
    if not pinned:
        print(
            "sandboxctl: warning: the head's signature was checked only against the key it carries; "
            f"pin the deployment's key with --public-key (or set {audit_head.KEY_ENV})",
            file=sys.stderr,
        )
    deployment = settings_of(args).deployment
    if head.deployment != deployment:
        raise HeadFileError(
            f"--head {args.head!r}: signed for deployment {head.deployment!r}, this is {deployment!r} "
            "(SANDBOX_DEPLOYMENT): it says nothing about this log"
        )
    return head


class HeadFileError(ConfigError):
    """A --head file that cannot be read, parsed or trusted."""


def cmd_audit_verify(args: argparse.Namespace) -> int:
    head = _anchor(args)
    anchor = None if head is None else Anchor(head.position, head.log_hash)
    report = verify_chains(_service(args).store, anchor=anchor)
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
                    "log": None
                    if report.log is None
                    else {"position": report.log.position, "detail": report.log.detail},
                    "head": {"position": report.head[0], "hash": report.head[1]},
                    # When and by which key the head was signed: an older genuine head swapped in for
                    # the newest one verifies, and only these tell the auditor how far it vouches.
                    "anchor": None
                    if head is None
                    else {
                        "position": head.position,
                        "hash": head.log_hash,
                        "signed_at": head.signed_at,
                        "key_id": head.key_id,
                        "deployment": head.deployment,
                        "intact": report.anchor_problem is None,
                        "detail": report.anchor_problem,
                    },
                },
                indent=2,
            )
        )
    else:
        for broken in report.broken:
            print(broken)
        if report.log is not None:
            print(report.log)
        if head is not None and report.anchor_problem is not None:
            print(f"{_describe(head)}: {report.anchor_problem}")
    if not report.ok:
        problems = len(report.broken) + (report.log is not None) + (report.anchor_problem is not None)
        print(f"{problems} problem(s): the log cannot be trusted as it stands", file=sys.stderr)
        return 1
    if not args.json:
        print(
            f"hash chains intact ({report.streams} streams, {report.events} events; "
            f"log head at position {report.head[0]})"
        )
        if head is not None:
            print(f"the log holds everything up to the {_describe(head)} unchanged")
            if head.position < report.head[0]:
                print(
                    f"events after position {head.position} (up to {report.head[0]}) are not covered by "
                    "this head: check a newer one"
                )
    return 0


def _describe(head: Any) -> str:
    return (
        f"signed head (position {head.position}, signed at {head.signed_at} by key {head.key_id} "
        f"for deployment {head.deployment!r})"
    )


def cmd_audit_head(args: argparse.Namespace) -> int:
    path = os.environ.get(audit_head.KEY_ENV)
    if not path:
        raise ConfigError(
            f"{audit_head.KEY_ENV} is not set: it names the Ed25519 private key file (PEM PKCS#8) "
            "heads are signed with; make one with `openssl genpkey -algorithm ed25519 -out key.pem`"
        )
    key = audit_head.load_private_key(path)
    store = _service(args).store
    position, log_hash = _current_head(store)
    head = audit_head.sign(key, position, log_hash, deployment=settings_of(args).deployment)
    if args.json:
        print(json.dumps(head.as_json(), indent=2))
    else:
        print(
            f"log head of deployment {head.deployment!r}: position {head.position}, hash {head.log_hash}, "
            f"at {head.signed_at}, signed by key {head.key_id}"
        )
        print(
            "keep the --json form outside the database; check it with `sandboxctl audit verify --head FILE`"
        )
    return 0


def _current_head(store: Any) -> tuple[int, str]:
    """The head row, checked against the log's last event: a head the log does not end at is not signed."""
    row = store.log_head()
    if row is None:
        raise StoreError("the log's head row is gone: run `sandboxctl audit verify`")
    position, log_hash = row
    at = store.read_links(max(position - 1, 0), 1)
    after = store.read_links(position, 1)
    matches = (position == 0 and not at) or (at and (at[0].position, at[0].log_hash) == row)
    if not matches or after:
        raise StoreError(
            "the log's head row does not name its last event: the log was cut or appended to behind the "
            "store's back; run `sandboxctl audit verify` (no head signed)"
        )
    return position, log_hash


def chain_problems(store: Any) -> list[str]:
    """What `replay --verify` adds to its projection check: each stream whose chain is broken, and
    where the log's chain over positions breaks (a deleted sandbox leaves every stream whole)."""
    report = verify_chains(store, ends=False)
    return [str(b) for b in report.broken] + ([] if report.log is None else [str(report.log)])


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
        help="recompute the log's and every stream's hash chain; name each tampered place",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument(
        "--head",
        metavar="FILE",
        help="a signed head (`audit head --json`) the log must still reach unchanged",
    )
    sp.add_argument(
        "--public-key",
        metavar="PEM",
        help="the key the head must be signed by (default: the public half of SANDBOX_AUDIT_SIGNING_KEY)",
    )
    sp.set_defaults(fn=cmd_audit_verify)
    sp = audit_sub.add_parser(
        "head",
        help="print a signed statement of the log's head (SANDBOX_AUDIT_SIGNING_KEY); keep it elsewhere",
    )
    sp.add_argument("--json", action="store_true", help="the head file `audit verify --head` reads")
    sp.set_defaults(fn=cmd_audit_head)
