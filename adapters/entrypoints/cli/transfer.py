"""`sandboxctl cp`, and the progress bars of what moves bytes (copies, snapshot uploads and downloads)."""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sandbox_lifecycle.adapters.composition.scrubbing import first_line
from sandbox_lifecycle.adapters.entrypoints.cli.context import EXIT_NOT_FOUND, Usage, fail, service_of

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
        raise Usage(
            "cp needs a sandbox path (ID:PATH) on exactly one side, e.g. sandboxctl cp ./app ID:app "
            "or sandboxctl cp ID:app/out.csv ./out.csv"
        )
    service = service_of(args)
    try:
        if src is not None:
            with progress(args, f"{args.src} → {args.dst}", None):
                report = _cp_out(service, src[0], src[1], args.dst)
        else:
            assert dst is not None
            with progress(args, f"{args.src} → {args.dst}", _local_size(args.src)):
                report = _cp_in(service, args.src, dst[0], dst[1])
    except FileNotFoundError as exc:
        fail(args, f"{first_line(str(exc))}; nothing was copied")
        return EXIT_NOT_FOUND
    except ValueError as exc:  # a sandbox path outside the sandbox home
        raise Usage(str(exc)) from exc
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


def progress(args: argparse.Namespace, label: str, total: int | None) -> AbstractContextManager[None]:
    """A progress bar on stderr when it is a terminal and --json was not asked for; else nothing."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return nullcontext()
    # Imported here: rich costs tens of milliseconds, paid only when a person watches a terminal.
    import sandbox_lifecycle.adapters.entrypoints.cli.pretty as pretty

    return pretty.bar(label, total)


def snapshot_progress(args: argparse.Namespace, service: Any, method: str) -> AbstractContextManager[None]:
    """The bar of a suspend's upload or a resume's download; nothing for the other verbs."""
    if method == "suspend":
        return progress(args, f"snapshot of {args.id} (upload)", None)
    if method == "resume":
        row = service.store.get_sandbox(args.id)
        return progress(args, f"snapshot of {args.id} (download)", row.snapshot_bytes if row else None)
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


def register_cp(add: Callable[..., argparse.ArgumentParser], sub: Any) -> None:
    """Add `cp` to the parser (``add`` is commands.build_parser's helper)."""
    sp = add(
        "cp",
        cmd_cp,
        "copy a file or directory into or out of a sandbox: SRC DST with ID:PATH on exactly one side",
        False,
    )
    sp.add_argument("src", help="a local path, or ID:PATH in a sandbox (relative to the kind's workdir)")
    sp.add_argument("dst", help="a local path, or ID:PATH in a sandbox")
