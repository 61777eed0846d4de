"""`sandboxctl`: the operator's and the scripts' interface. Read commands take --json.

This module is the command line's grammar and its dispatch: which verbs exist and what parses their
arguments (``VERBS``), and ``main``, which runs one and maps its failure to an exit code. What a verb
does lives in its family's module: ``sandboxes`` (one sandbox, the rows), ``transfer`` (`cp`),
``operations`` (the operator's verbs), ``processes``, ``agent``, ``gateway``, ``audit``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from sandbox_lifecycle.adapters.composition.scrubbing import environ_secrets, first_line
from sandbox_lifecycle.adapters.composition.settings import parse_log_format
from sandbox_lifecycle.adapters.entrypoints.cli.context import (
    EXIT_BUSY,
    EXIT_CAPACITY,
    EXIT_ERROR,
    EXIT_EXPIRED,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Usage,
    fail,
    scrubbed,
    service_of,
)
from sandbox_lifecycle.adapters.entrypoints.cli.sandboxes import VERBS as SANDBOX_VERBS
from sandbox_lifecycle.adapters.entrypoints.cli.transfer import register_cp
from sandbox_lifecycle.adapters.observability.logs import configure_logging
from sandbox_lifecycle.core.errors import (
    CapacityExceeded,
    CheckpointNotFound,
    ConfigError,
    ExecTimeout,
    ProcessNotFound,
    SandboxBusy,
    SandboxError,
    SandboxExpired,
    SandboxNotFound,
    StoreError,
)
from sandbox_lifecycle.core.observe import log_context

__all__ = [
    "EXIT_BUSY",
    "EXIT_CAPACITY",
    "EXIT_ERROR",
    "EXIT_EXPIRED",
    "EXIT_NOT_FOUND",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "VERBS",
    "build_parser",
    "main",
    "parse_args",
    "verb_of",
]

# First match wins: the specific errors before the families they belong to.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (Usage, EXIT_USAGE),
    # An unknown or collected checkpoint version: the command line named what is not there.
    (CheckpointNotFound, EXIT_USAGE),
    (SandboxNotFound, EXIT_NOT_FOUND),
    (ProcessNotFound, EXIT_NOT_FOUND),
    (SandboxBusy, EXIT_BUSY),
    (CapacityExceeded, EXIT_CAPACITY),
    (SandboxExpired, EXIT_EXPIRED),
    (ExecTimeout, EXIT_TIMEOUT),
    (BaseException, EXIT_ERROR),
)


# The `add` helper of build_parser: (name, fn, help, json_flag=True) -> the verb's parser.
AddVerb = Callable[..., argparse.ArgumentParser]
# Adds one verb (or a module's few) to the parser: (add, the subparsers action) -> None.
Registrar = Callable[[AddVerb, Any], None]

# The verbs' modules below are imported when their verb runs, not with this module: each cost a short
# command more than its own work (tests/**/test_imports.py holds the list). Times measured 12-07 on a
# loaded 2-core machine, with `import` after this module's own.


def _operations_verb(name: str) -> Registrar:
    def register(add: AddVerb, sub: Any) -> None:
        # Imported here: the operator's verbs' module loads in about 0.14 s (replay, audit, doctor).
        from sandbox_lifecycle.adapters.entrypoints.cli.operations import VERBS as OPERATION_VERBS

        OPERATION_VERBS[name](add, sub)

    return register


def _process_verbs(add: AddVerb, sub: Any) -> None:
    # Imported here: cheap (under 1 ms), but tests/**/test_imports.py keeps it out of other verbs.
    from sandbox_lifecycle.adapters.entrypoints.cli.processes import register

    register(add)


def _checkpoint_verbs(add: AddVerb, sub: Any) -> None:
    # Imported here: only its own verbs need it (tests/**/test_imports.py keeps it out of the others).
    from sandbox_lifecycle.adapters.entrypoints.cli.checkpoints import register

    register(add, sub)


def _agent_verb(add: AddVerb, sub: Any) -> None:
    # Imported here: the agent's module and its stream parser load in about 7 ms.
    from sandbox_lifecycle.adapters.entrypoints.cli.agent import register

    register(add, service_of)


def _gateway_verb(add: AddVerb, sub: Any) -> None:
    # Imported here: the gateway with asyncio and ssl loads in about 0.3 s.
    from sandbox_lifecycle.adapters.entrypoints.cli.gateway import register

    register(add)


def _audit_verbs(add: AddVerb, sub: Any) -> None:
    # Imported here: the audit verbs' module (chain verifier, signed heads) loads in about 75 ms.
    from sandbox_lifecycle.adapters.entrypoints.cli.audit import register

    register(add, sub)


def _console_verb(add: AddVerb, sub: Any) -> None:
    # Imported here: only its own verb needs it; Starlette and uvicorn load when it runs.
    from sandbox_lifecycle.adapters.entrypoints.cli.console import register

    register(add, sub)


# Every verb and what adds it to the parser, in the order `sandboxctl --help` lists them. A command
# builds its own verb's parser only: building every verb's parser cost a short command more than its
# own work. A new verb is one line here (its module's register function adds its arguments).
VERBS: dict[str, Registrar] = {
    **{name: SANDBOX_VERBS[name] for name in ("create", "exec")},
    "cp": register_cp,
    **{name: SANDBOX_VERBS[name] for name in ("suspend", "resume", "destroy", "touch", "egress")},
    **{name: SANDBOX_VERBS[name] for name in ("ls", "show", "history")},
    **dict.fromkeys(("checkpoints", "rewind", "fork"), _checkpoint_verbs),
    **{
        name: _operations_verb(name)
        for name in ("replay", "sweep", "reconcile", "recover", "scheduler", "db")
    },
    **dict.fromkeys(("ps", "logs", "kill", "url"), _process_verbs),
    **{name: _operations_verb(name) for name in ("diagram", "doctor")},
    "agent": _agent_verb,
    "demo": _operations_verb("demo"),
    "gateway": _gateway_verb,
    **dict.fromkeys(("events", "relay", "audit"), _audit_verbs),
    "console": _console_verb,
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with the width looked up once, by ``_help_width``: argparse builds a formatter
    for every argument added, and asks shutil for the terminal's size each time (importing shutil, with
    the compression modules it loads, is most of parsing a short command's arguments)."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)


@functools.cache
def _help_width() -> int:
    """What argparse computes, ``shutil.get_terminal_size().columns - 2``, by the same rules: $COLUMNS,
    else the terminal of stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb, or of ``verb`` alone (with the few its module adds beside it)."""
    p = argparse.ArgumentParser(
        prog="sandboxctl",
        description="Run and inspect sandboxes for AI coding agents.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (never secrets)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.set_defaults(fn=fn)
        return sp

    registrars = [VERBS[verb]] if verb in VERBS else dict.fromkeys(VERBS.values())
    for register in registrars:
        register(add, sub)
    return p


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb ``argv`` runs (its first word after the global options), or None when it names none:
    ``--help`` or a mistyped verb need every verb's parser, to list them or say what is valid."""
    for word in argv:
        if word not in ("-v", "--verbose"):
            return word if word in VERBS else None
    return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse; `exec`'s command is everything after the first `--`, taken before argparse sees it.

    argparse's REMAINDER would swallow options given after the id (`exec ID --timeout 5 -- ls` ran
    `--timeout`), and a command's own options and `--` must reach it untouched.
    """
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = build_parser(verb_of(argv[:cut]))
    if cut < len(argv):
        args = parser.parse_args(argv[:cut])
        if args.cmd == "exec":
            args.command = argv[cut + 1 :]
            return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as done:  # argparse: --help (0) or a usage error it already printed (2)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    args.log_context = configure_logging(
        logging.INFO if args.verbose else logging.WARNING,
        parse_log_format(os.environ)[0],
        environ_secrets(os.environ),
    )
    try:
        with log_context(sandbox_id=getattr(args, "id", None)):
            return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except (Usage, ConfigError, SandboxError, StoreError) as exc:
        fail(args, str(exc))
        return next(code for kind, code in _EXIT_CODES if isinstance(exc, kind))
    except Exception as exc:
        # A bug or an unforeseen failure: one line a person can report; the traceback only on request.
        if args.verbose:
            sys.stderr.write(scrubbed(args, traceback.format_exc()))
        hint = "" if args.verbose else " (run with -v for the traceback)"
        fail(args, f"{type(exc).__name__}: {first_line(str(exc))}{hint}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
