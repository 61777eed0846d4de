"""The verbs on one sandbox or the fleet's rows: `create`, `exec`, `suspend`, `resume`, `destroy`,
`touch`, `egress`, `ls`, `show`, `history`."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from sandbox_lifecycle.adapters.entrypoints.cli.context import Usage, service_of, settings_of
from sandbox_lifecycle.adapters.entrypoints.cli.fast_read import rows_reader
from sandbox_lifecycle.adapters.entrypoints.cli.render import print_history, print_row, print_rows
from sandbox_lifecycle.adapters.entrypoints.cli.row_values import event_label
from sandbox_lifecycle.adapters.entrypoints.cli.transfer import snapshot_progress
from sandbox_lifecycle.adapters.observability.logs import log_change
from sandbox_lifecycle.core import lifecycle
from sandbox_lifecycle.core.errors import SandboxNotFound
from sandbox_lifecycle.core.kinds import KINDS

MAX_EXEC_TIMEOUT_S = 86_400
# Patterns are compiled on first use (re caches them): most commands never read an --env.
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def cmd_create(args: argparse.Namespace) -> int:
    row = service_of(args).create(args.kind, args.conversation, idempotency_key=args.idempotency_key)
    log_change("create", row)
    print_row(row, args.json)
    return 0


def exec_timeout(raw: str) -> float:
    """--timeout: seconds, finite, above 0 and at most a day (nan and inf are floats too)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_EXEC_TIMEOUT_S):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {MAX_EXEC_TIMEOUT_S}, got {raw!r}"
        )
    return value


def env_pair(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not re.fullmatch(_ENV_NAME, name):
        raise argparse.ArgumentTypeError(f"must be K=V with K a variable name such as FOO_1, got {raw!r}")
    return name, value


def exec_cwd(raw: str) -> str:
    """An absolute path with no ``..``: a relative or climbing one reached the runtime as a raw OCI
    error (rc 126); refused here it is a usage error before any sandbox is touched."""
    if not raw.startswith("/") or ".." in raw.split("/") or "\0" in raw:
        raise argparse.ArgumentTypeError(f"must be an absolute path in the sandbox with no '..', got {raw!r}")
    return raw


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if not command:
        raise Usage("exec needs a command after --, e.g. sandboxctl exec ID --timeout 60 -- ls -la")
    if args.detach:
        # Imported here: the background-process verbs' module is loaded only when one of them runs
        # (tests/integration/adapters/entrypoints/cli/test_imports.py).
        from sandbox_lifecycle.adapters.entrypoints.cli.processes import cmd_exec_detached

        return cmd_exec_detached(args)
    env = dict(args.env or [])
    # Streamed as it arrives, flushed per chunk: a long build shows its progress, a timeout keeps what
    # was printed before it, and output past the in-memory bound still reaches the terminal whole. The
    # bytes the command wrote, untouched: `sandboxctl exec ID -- cat some.bin > out.bin` is exact.
    result = service_of(args).exec(
        args.id,
        command,
        timeout=args.timeout,
        env=env or None,
        cwd=args.cwd,
        on_stdout=_live(sys.stdout),
        on_stderr=_live(sys.stderr),
        # Everything went to the terminal already; the result needs none of it.
        max_output_bytes=0,
    )
    return int(result.exit_code)


def _live(stream: Any) -> Callable[[bytes], None]:
    def write(chunk: bytes) -> None:
        stream.buffer.write(chunk)
        stream.buffer.flush()
        stream.flush()

    return write


def simple(method: str) -> Callable[[argparse.Namespace], int]:
    """The command of a verb that is one service call on one sandbox, printing its row."""

    def run(args: argparse.Namespace) -> int:
        service = service_of(args)
        with snapshot_progress(args, service, method):
            row = getattr(service, method)(args.id)
        log_change(method, row)
        print_row(row, args.json)
        return 0

    return run


def cmd_egress(args: argparse.Namespace) -> int:
    """Replace what the sandbox may reach (``--allow``; none: nothing), or go back to its kind's list."""
    # --allow may repeat, each with any number of hosts, comma-separated or not.
    given = [text for group in args.allow or [] for text in group]
    allow = None if args.reset else [h for text in given for h in text.split(",") if h.strip()]
    row = service_of(args).set_egress(args.id, allow, reason=args.reason)
    log_change("egress", row)
    print_row(row, args.json)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    if args.state and args.state not in lifecycle.STATES[1:]:
        raise Usage(f"unknown state {args.state!r}; states are: {', '.join(lifecycle.STATES[1:])}")
    reader = rows_reader(settings_of(args))
    print_rows(reader.list_sandboxes(args.state) if reader else service_of(args).list(args.state), args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reader = rows_reader(settings_of(args))
    row = reader.get_sandbox(args.id) if reader else service_of(args).get(args.id)
    if row is None:
        raise SandboxNotFound(args.id)
    print_row(row, args.json)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    entries = service_of(args).history(args.id)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "version": e.version,
                        "type": e.type,
                        "occurred_at": e.occurred_at.isoformat(),
                        "from_state": e.from_state,
                        "to_state": e.to_state,
                        "reason": e.reason,
                        "actor": e.actor,
                        **({"detail": event_label(e)} if event_label(e) != e.type else {}),
                        # A run's usage, as measured (null: not measured): docs/operations.md.
                        **({"usage": dict(e.data)} if e.type == "UsageRecorded" else {}),
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return 0
    print_history(entries)
    return 0


# The `add` helper of commands.build_parser: (name, fn, help, json_flag=True) -> the verb's parser.
AddVerb = Callable[..., argparse.ArgumentParser]


def _create_verb(add: AddVerb, sub: Any) -> None:
    sp = add("create", cmd_create, "create a sandbox")
    sp.add_argument("--kind", required=True, choices=sorted(KINDS))
    sp.add_argument("--conversation", help="the conversation the sandbox belongs to")
    sp.add_argument("--idempotency-key", help="a retried create with the same key makes no second sandbox")


def _exec_verb(add: AddVerb, sub: Any) -> None:
    sp = add(
        "exec",
        cmd_exec,
        "run a command in a sandbox (resumes it if suspended); exit code passes through",
        False,
    )
    sp.add_argument("id")
    sp.add_argument(
        "--timeout",
        type=exec_timeout,
        default=300.0,
        help=f"seconds before the command is killed (default 300, at most {MAX_EXEC_TIMEOUT_S})",
    )
    sp.add_argument(
        "--cwd", type=exec_cwd, help="absolute working directory in the sandbox (default: the kind's workdir)"
    )
    sp.add_argument("--env", action="append", type=env_pair, metavar="K=V", help="repeatable")
    sp.add_argument("--detach", action="store_true", help="run in the background; print the process id")
    # Filled from what follows `--` (see commands.parse_args), so options may come before or after the id.
    sp.set_defaults(command=[])


def _simple_verb(name: str, help: str) -> Callable[[AddVerb, Any], None]:
    def register(add: AddVerb, sub: Any) -> None:
        add(name, simple(name), help).add_argument("id")

    return register


def _egress_verb(add: AddVerb, sub: Any) -> None:
    sp = add("egress", cmd_egress, "change what a sandbox may reach while it lives (recorded in its log)")
    sp.add_argument("id")
    which = sp.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--allow",
        nargs="*",
        action="append",
        metavar="HOST",
        help="the hosts (name, *.domain or host:port) it may reach instead of its kind's; none: nothing",
    )
    which.add_argument("--reset", action="store_true", help="back to the kind's allow-list")
    sp.add_argument("--reason", default="user", help="why, as recorded with the change (default: user)")


def _ls_verb(add: AddVerb, sub: Any) -> None:
    add("ls", cmd_ls, "list sandboxes").add_argument("--state")


def _show_verb(add: AddVerb, sub: Any) -> None:
    add("show", cmd_show, "show one sandbox").add_argument("id")


def _history_verb(add: AddVerb, sub: Any) -> None:
    add("history", cmd_history, "the sandbox's timeline from the event log").add_argument("id")


# Each verb and what adds it to the parser: (add, the subparsers action) -> None.
VERBS: dict[str, Callable[[AddVerb, Any], None]] = {
    "create": _create_verb,
    "exec": _exec_verb,
    "suspend": _simple_verb("suspend", "snapshot the workspace and release the compute"),
    "resume": _simple_verb("resume", "bring a suspended sandbox back"),
    "destroy": _simple_verb("destroy", "remove the sandbox and its snapshot"),
    "touch": _simple_verb("touch", "record activity (postpones the idle timeout)"),
    "egress": _egress_verb,
    "ls": _ls_verb,
    "show": _show_verb,
    "history": _history_verb,
}
