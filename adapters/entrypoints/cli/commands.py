"""`sandboxctl`: the operator's and the scripts' interface. Read commands take --json."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import posixpath
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sandbox_lifecycle.adapters.composition.scrubbing import environ_secrets, first_line, scrub
from sandbox_lifecycle.adapters.composition.settings import Settings, parse_log_format
from sandbox_lifecycle.adapters.entrypoints.cli.render import (
    print_history,
    print_report,
    print_row,
    print_rows,
)
from sandbox_lifecycle.adapters.observability.logs import log_change
from sandbox_lifecycle.core.errors import (
    CapacityExceeded,
    ConfigError,
    ExecTimeout,
    ProcessNotFound,
    SandboxBusy,
    SandboxError,
    SandboxExpired,
    SandboxNotFound,
    StoreError,
)
from sandbox_lifecycle.core.kinds import KINDS
from sandbox_lifecycle.core.observe import log_context

# Distinct exit codes so scripts can react without parsing messages.
EXIT_ERROR, EXIT_USAGE, EXIT_BUSY, EXIT_NOT_FOUND, EXIT_EXPIRED, EXIT_TIMEOUT = 1, 2, 3, 4, 5, 124
# The fleet stayed full for SANDBOX_CAPACITY_WAIT_MS: a temporary failure (sysexits' EX_TEMPFAIL).
EXIT_CAPACITY = 75


# Commands that only read the log: they work without provider credentials (and never load its SDK).
READ_ONLY = frozenset({"ls", "show", "history", "replay", "doctor"})
MAX_EXEC_TIMEOUT_S = 86_400
# Patterns are compiled on first use (re caches them): most commands never read an --env or a cp path.
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "settings", None) is None:
        args.settings = Settings.from_env()
        if getattr(args, "log_context", None) is not None:
            args.log_context.add_secrets(args.settings.secrets())
    settings: Settings = args.settings
    return settings


def _service(args: argparse.Namespace) -> Any:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    return build_service(settings=_settings(args), require_provider=args.cmd not in READ_ONLY)


def cmd_create(args: argparse.Namespace) -> int:
    row = _service(args).create(args.kind, args.conversation, idempotency_key=args.idempotency_key)
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
        raise _Usage("exec needs a command after --, e.g. sandboxctl exec ID --timeout 60 -- ls -la")
    if args.detach:
        from sandbox_lifecycle.adapters.entrypoints.cli.processes import cmd_exec_detached

        return cmd_exec_detached(args)
    env = dict(args.env or [])
    # Streamed as it arrives, flushed per chunk: a long build shows its progress, a timeout keeps what
    # was printed before it, and output past the in-memory bound still reaches the terminal whole. The
    # bytes the command wrote, untouched: `sandboxctl exec ID -- cat some.bin > out.bin` is exact.
    result = _service(args).exec(
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


def _live(stream: Any) -> Any:
    def write(chunk: bytes) -> None:
        stream.buffer.write(chunk)
        stream.buffer.flush()
        stream.flush()

    return write


# `ID:path` names a path in a sandbox (docker cp's convention): an id, then a colon before any slash.
# A local path holding a colon is written ./a:b.
_REMOTE = r"([A-Za-z0-9][A-Za-z0-9_.-]*):(.*)"


def _remote(spec: str) -> tuple[str, str] | None:
    match = re.fullmatch(_REMOTE, spec, re.DOTALL)
    return (match.group(1), match.group(2) or ".") if match else None


def cmd_cp(args: argparse.Namespace) -> int:
    """Copy a file or a directory into or out of a sandbox, as `docker cp` does: when the destination is
    an existing directory the source goes inside it under its own name, otherwise it becomes the
    destination. Directories are streamed; a missing source path exits 4 like a missing sandbox."""
    src, dst = _remote(args.src), _remote(args.dst)
    if (src is None) == (dst is None):
        raise _Usage(
            "cp needs a sandbox path (ID:PATH) on exactly one side, e.g. sandboxctl cp ./app ID:app "
            "or sandboxctl cp ID:app/out.csv ./out.csv"
        )
    service = _service(args)
    try:
        if src is not None:
            with _progress(args, f"{args.src} → {args.dst}", None):
                report = _cp_out(service, src[0], src[1], args.dst)
        else:
            assert dst is not None
            with _progress(args, f"{args.src} → {args.dst}", _local_size(args.src)):
                report = _cp_in(service, args.src, dst[0], dst[1])
    except FileNotFoundError as exc:
        _fail(args, f"{first_line(str(exc))}; nothing was copied")
        return EXIT_NOT_FOUND
    except ValueError as exc:  # a sandbox path outside the sandbox home
        raise _Usage(str(exc)) from exc
    files, size, skipped = report
    for name in skipped:
        print(
            f"sandboxctl: left out {name!r} (unsafe to copy: a link leaving the directory, a device)",
            file=sys.stderr,
        )
    print(f"copied {files} file(s), {size} bytes", file=sys.stderr)
    return 0


def _cp_out(service: Any, sandbox_id: str, remote: str, local: str) -> tuple[int, int, tuple[str, ...]]:
    target = local
    if os.path.isdir(local):
        target = os.path.join(local, posixpath.basename(posixpath.normpath(remote)))
    try:
        report = service.download_dir(sandbox_id, remote, target)
        return report.files, report.bytes, report.skipped
    except NotADirectoryError:
        data = service.read_file(sandbox_id, remote)
    with open(target, "wb") as out:
        out.write(data)
    return 1, len(data), ()


def _cp_in(service: Any, local: str, sandbox_id: str, remote: str) -> tuple[int, int, tuple[str, ...]]:
    if not os.path.lexists(local):
        raise FileNotFoundError(f"{local} does not exist")
    name = os.path.basename(os.path.normpath(local))
    is_dir = os.path.isdir(local)
    # Into an existing directory: under the source's own name, as docker cp does.
    inside = service.exists(sandbox_id, remote) and _is_remote_dir(service, sandbox_id, remote)
    target = posixpath.join(remote, name) if inside else remote
    if is_dir:
        report = service.upload_dir(sandbox_id, local, target)
        return report.files, report.bytes, report.skipped
    with open(local, "rb") as source:
        data = source.read()
    service.write_file(sandbox_id, target, data)
    return 1, len(data), ()


def _is_remote_dir(service: Any, sandbox_id: str, remote: str) -> bool:
    try:
        service.list_dir(sandbox_id, remote)
    except NotADirectoryError:
        return False
    return True


def _simple(method: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        service = _service(args)
        with _snapshot_progress(args, service, method):
            row = getattr(service, method)(args.id)
        log_change(method, row)
        print_row(row, args.json)
        return 0

    return run


def _progress(args: argparse.Namespace, label: str, total: int | None) -> Any:
    """A progress bar on stderr when it is a terminal and --json was not asked for; else nothing."""
    from contextlib import nullcontext

    if getattr(args, "json", False) or not sys.stderr.isatty():
        return nullcontext()
    from sandbox_lifecycle.adapters.entrypoints.cli import pretty

    return pretty.bar(label, total)


def _snapshot_progress(args: argparse.Namespace, service: Any, method: str) -> Any:
    if method == "suspend":
        return _progress(args, f"snapshot of {args.id} (upload)", None)
    if method == "resume":
        row = service.store.get_sandbox(args.id)
        return _progress(args, f"snapshot of {args.id} (download)", row.snapshot_bytes if row else None)
    from contextlib import nullcontext

    return nullcontext()


def _local_size(path: str) -> int | None:
    """Bytes under ``path`` (a file or a tree, links not followed), for the upload bar's total."""
    try:
        if not os.path.isdir(path):
            return os.path.getsize(path)
        return sum(
            os.lstat(os.path.join(root, name)).st_size
            for root, _dirs, files in os.walk(path)
            for name in files
        )
    except OSError:
        return None


def cmd_ls(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.core import lifecycle

    if args.state and args.state not in lifecycle.STATES[1:]:
        raise _Usage(f"unknown state {args.state!r}; states are: {', '.join(lifecycle.STATES[1:])}")
    reader = _reader(args)
    print_rows(reader.list_sandboxes(args.state) if reader else _service(args).list(args.state), args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reader = _reader(args)
    row = reader.get_sandbox(args.id) if reader else _service(args).get(args.id)
    if row is None:
        raise SandboxNotFound(args.id)
    print_row(row, args.json)
    return 0


def _reader(args: argparse.Namespace) -> Any:
    """`ls` and `show` read rows straight from an up-to-date SQLite file; None: ask the service."""
    from sandbox_lifecycle.adapters.entrypoints.cli.fast_read import rows_reader

    return rows_reader(_settings(args))


def cmd_history(args: argparse.Namespace) -> int:
    entries = _service(args).history(args.id)
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
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return 0
    print_history(entries)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.adapters.entrypoints.cli import audit as audit_cli
    from sandbox_lifecycle.adapters.entrypoints.rebuild import parallel_rebuild
    from sandbox_lifecycle.core.replay import verify

    service = _service(args)
    projections = parallel_rebuild(_settings(args).database_url, service.policy, args.workers)
    if args.rebuild:
        service.store.replace_all_projections(projections)
        print(f"rebuilt projections of {len(projections)} sandboxes from the log")
    diffs = verify(service.store, service.policy, rebuilt=projections)
    diffs = [*diffs, *audit_cli.chain_problems(service.store)]
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
        raise _Usage(f"--now must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got {raw!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_sweep(args: argparse.Namespace) -> int:
    now = _parse_now(args.now)  # a usage error before any setting or connection is looked at
    report = _service(args).sweep(now)
    print_report(report, args.json)
    return 1 if report.errors else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    report = _service(args).reconcile()
    print_report(report, args.json)
    return 1 if report.errors else 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.adapters.entrypoints.scheduler import run_forever

    service = _service(args)
    if args.metrics_port is not None:
        from sandbox_lifecycle.adapters.observability.serve import serve_metrics

        serve_metrics(service, _settings(args), args.metrics_port, args.metrics_host)
    run_forever(service, _settings(args).sweep_interval)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.adapters.composition.bootstrap import build_store
    from sandbox_lifecycle.events import migrate

    settings = _settings(args)

    if settings.database_url.startswith("sqlite"):
        build_store(settings, migrate_embedded=False)  # creates the data dir
    migrate.upgrade(settings.database_url)
    print(f"database at revision {migrate.current(settings.database_url)}")
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.core import lifecycle

    print(lifecycle.mermaid())
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.adapters.entrypoints.cli.doctor import run_doctor

    return run_doctor(args, _settings)


def cmd_demo(args: argparse.Namespace) -> int:
    from sandbox_lifecycle.adapters.entrypoints.cli.demo import run_demo

    return run_demo(_service(args), kind=args.kind)


class _Usage(Exception):
    pass


# First match wins: the specific errors before the families they belong to.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (_Usage, EXIT_USAGE),
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
    # Filled from what follows `--` (see main), so options may come before or after the id.
    sp.set_defaults(command=[])


def _cp_verb(add: AddVerb, sub: Any) -> None:
    sp = add(
        "cp",
        cmd_cp,
        "copy a file or directory into or out of a sandbox: SRC DST with ID:PATH on exactly one side",
        False,
    )
    sp.add_argument("src", help="a local path, or ID:PATH in a sandbox (relative to the kind's workdir)")
    sp.add_argument("dst", help="a local path, or ID:PATH in a sandbox")


def _simple_verb(name: str, help: str) -> Registrar:
    def register(add: AddVerb, sub: Any) -> None:
        add(name, _simple(name), help).add_argument("id")

    return register


def _ls_verb(add: AddVerb, sub: Any) -> None:
    add("ls", cmd_ls, "list sandboxes").add_argument("--state")


def _show_verb(add: AddVerb, sub: Any) -> None:
    add("show", cmd_show, "show one sandbox").add_argument("id")


def _history_verb(add: AddVerb, sub: Any) -> None:
    add("history", cmd_history, "the sandbox's timeline from the event log").add_argument("id")


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


def _process_verbs(add: AddVerb, sub: Any) -> None:
    from sandbox_lifecycle.adapters.entrypoints.cli import processes

    processes.register(add)


def _diagram_verb(add: AddVerb, sub: Any) -> None:
    add("diagram", cmd_diagram, "print the lifecycle as a Mermaid state diagram", False)


def _doctor_verb(add: AddVerb, sub: Any) -> None:
    add("doctor", cmd_doctor, "check settings, database, provider, images, snapshot store and scheduler")


def _agent_verb(add: AddVerb, sub: Any) -> None:
    from sandbox_lifecycle.adapters.entrypoints.cli import agent

    agent.register(add, _service)


def _demo_verb(add: AddVerb, sub: Any) -> None:
    sp = add("demo", cmd_demo, "two turns of a conversation on real sandboxes, then the history", False)
    sp.add_argument("--kind", default="data-app", choices=sorted(KINDS))


def _gateway_verb(add: AddVerb, sub: Any) -> None:
    from sandbox_lifecycle.adapters.entrypoints.cli import gateway

    gateway.register(add)


def _audit_verbs(add: AddVerb, sub: Any) -> None:
    from sandbox_lifecycle.adapters.entrypoints.cli import audit

    audit.register(add, sub)


# Every verb and what adds it to the parser, in the order `sandboxctl --help` lists them. A command
# builds its own verb's parser only, and imports a verb's module only when that verb runs: building
# every verb's parser, and importing the agent's and the gateway's modules, cost a short command more
# than its own work. A new verb is one line here (its module's register function adds its arguments).
VERBS: dict[str, Registrar] = {
    "create": _create_verb,
    "exec": _exec_verb,
    "cp": _cp_verb,
    "suspend": _simple_verb("suspend", "snapshot the workspace and release the compute"),
    "resume": _simple_verb("resume", "bring a suspended sandbox back"),
    "destroy": _simple_verb("destroy", "remove the sandbox and its snapshot"),
    "touch": _simple_verb("touch", "record activity (postpones the idle timeout)"),
    "ls": _ls_verb,
    "show": _show_verb,
    "history": _history_verb,
    "replay": _replay_verb,
    "sweep": _sweep_verb,
    "reconcile": _reconcile_verb,
    "scheduler": _scheduler_verb,
    "db": _db_verb,
    **dict.fromkeys(("ps", "logs", "kill", "url"), _process_verbs),
    "diagram": _diagram_verb,
    "doctor": _doctor_verb,
    "agent": _agent_verb,
    "demo": _demo_verb,
    "gateway": _gateway_verb,
    **dict.fromkeys(("events", "relay", "audit"), _audit_verbs),
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
    from sandbox_lifecycle.adapters.observability.logs import configure_logging

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
    except (_Usage, ConfigError, SandboxError, StoreError) as exc:
        _fail(args, str(exc))
        return next(code for kind, code in _EXIT_CODES if isinstance(exc, kind))
    except Exception as exc:
        # A bug or an unforeseen failure: one line a person can report; the traceback only on request.
        if args.verbose:
            sys.stderr.write(_scrub(args, traceback.format_exc()))
        hint = "" if args.verbose else " (run with -v for the traceback)"
        _fail(args, f"{type(exc).__name__}: {first_line(str(exc))}{hint}")
        return EXIT_ERROR


def _scrub(args: argparse.Namespace, text: str) -> str:
    settings = getattr(args, "settings", None)
    # The environment's secrets always: some (the audit signing key) are read outside Settings.
    secrets = environ_secrets(os.environ)
    return scrub(text, (*settings.secrets(), *secrets) if settings is not None else secrets)


def _fail(args: argparse.Namespace, message: str) -> None:
    print(f"sandboxctl: {_scrub(args, ' '.join(message.split()))}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
