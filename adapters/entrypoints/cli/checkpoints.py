"""The checkpoint verbs: `checkpoints` (list), `rewind`, `fork` (docs/checkpoints.md)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from sandbox_lifecycle.adapters.entrypoints.cli.context import service_of
from sandbox_lifecycle.adapters.entrypoints.cli.render import print_row
from sandbox_lifecycle.adapters.observability.logs import log_change

__all__ = ["register"]


def cmd_checkpoints(args: argparse.Namespace) -> int:
    found = service_of(args).checkpoints(args.id)
    if args.json:
        rows = [
            {
                "version": c.version,
                "at": c.at.isoformat(),
                "reason": c.reason,
                "bytes": c.bytes,
                "bytes_new": c.bytes_new,
                "current": c.current,
            }
            for c in found
        ]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'VER':>5}  {'TAKEN':25}  {'REASON':14}  {'BYTES':>12}  {'NEW':>10}  CURRENT")
    for c in found:
        new = "-" if c.bytes_new is None else str(c.bytes_new)
        size = "-" if c.bytes is None else str(c.bytes)
        taken = c.at.isoformat(timespec="seconds")
        print(f"{c.version:>5}  {taken:25}  {c.reason:14}  {size:>12}  {new:>10}  {'*' if c.current else ''}")
    return 0


def cmd_rewind(args: argparse.Namespace) -> int:
    row = service_of(args).rewind(args.id, args.to)
    log_change("rewind", row)
    print_row(row, args.json)
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    row = service_of(args).fork(args.id, at_version=args.at, conversation_id=args.conversation)
    log_change("fork", row)
    print_row(row, args.json)
    return 0


def _version(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a checkpoint's version (a whole number from 1), got {raw!r}"
        )
    return int(raw)


def register(add: Callable[..., argparse.ArgumentParser], sub: Any) -> None:
    add(
        "checkpoints", cmd_checkpoints, "a sandbox's checkpoints (one per suspend retention keeps)"
    ).add_argument("id")
    sp = add("rewind", cmd_rewind, "make the sandbox's next resume restore an earlier checkpoint")
    sp.add_argument("id")
    sp.add_argument("--to", type=_version, required=True, metavar="VERSION", help="the checkpoint's version")
    sp = add("fork", cmd_fork, "a new suspended sandbox resuming from a checkpoint (default: the latest)")
    sp.add_argument("id")
    sp.add_argument("--at", type=_version, metavar="VERSION", help="the checkpoint's version")
    sp.add_argument("--conversation", help="the conversation the new sandbox belongs to")
