"""`sandboxctl` verbs for background processes and ports: `exec --detach`, `ps`, `logs`, `kill`, `url`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict

from sandbox_lifecycle.adapters.entrypoints.cli.context import service_of

# The `add` helper of commands.build_parser: (name, fn, help, json_flag=True) -> the verb's parser.
AddVerb = Callable[..., argparse.ArgumentParser]


def cmd_exec_detached(args: argparse.Namespace) -> int:
    """`exec --detach ID -- CMD`: start it in the background and print its process id."""
    process = service_of(args).start(
        args.id, list(args.command), env=dict(args.env or []) or None, cwd=args.cwd
    )
    print(process.id)
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    found = service_of(args).processes(args.id)
    if args.json:
        print(json.dumps([{**asdict(p), "command": list(p.command)} for p in found], indent=2))
        return 0
    print(f"{'ID':15}  {'STATUS':12}  {'CWD':28}  COMMAND")
    for p in found:
        status = "running" if p.running else f"exited {p.exit_code if p.exit_code is not None else '?'}"
        print(f"{p.id:15}  {status:12}  {p.cwd:28}  {shlex.join(p.command)}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """What the process printed so far: its stdout to stdout, its stderr to stderr, bytes untouched."""
    logs = service_of(args).process_logs(args.id, args.pid)
    sys.stdout.buffer.write(logs.stdout_bytes)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(logs.stderr_bytes)
    sys.stderr.buffer.flush()
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    service_of(args).kill_process(args.id, args.pid)
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    """The port's URL; the header it needs (E2B's traffic access token, a secret) only when asked for
    with --show-token, so a terminal log or a pasted output never holds it by accident."""
    preview = service_of(args).preview(args.id, args.port)
    print(preview.url)
    if args.show_token:
        for name, value in preview.headers.items():
            print(f"{name}: {value}")
    elif preview.headers:
        print(
            f"note: the port answers only requests carrying the header {', '.join(preview.headers)}; "
            f"`sandboxctl url {args.id} {args.port} --show-token` prints it (a secret)",
            file=sys.stderr,
        )
    return 0


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {raw!r}")
    return value


def register(add: AddVerb) -> None:
    """Add the verbs to `sandboxctl`'s parser (``add`` is build_parser's)."""
    sp = add("ps", cmd_ps, "list the background processes of a sandbox (started with exec --detach)")
    sp.add_argument("id")
    sp = add("logs", cmd_logs, "print what a background process wrote so far (stdout, stderr)", False)
    sp.add_argument("id")
    sp.add_argument("pid", help="the process id `exec --detach` printed")
    sp = add("kill", cmd_kill, "kill a background process and everything it started", False)
    sp.add_argument("id")
    sp.add_argument("pid")
    sp = add("url", cmd_url, "print the URL on which this host reaches a port of the sandbox", False)
    sp.add_argument("id")
    sp.add_argument("port", type=_port)
    sp.add_argument(
        "--show-token",
        action="store_true",
        help="also print the header the port needs (E2B: its traffic access token, a secret), as NAME: VALUE",
    )
