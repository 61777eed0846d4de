"""What the egress point records per sandbox: the time of its last model call, counters of its gateway
calls (with the tokens the upstream reported) and of the bytes its proxy moved; and, for the backend,
what those counters grew by during one run of the sandbox (from its container's start to now).

Standard library only (see the package docstring).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("sandbox_lifecycle.egress.gateway")

# Folders of the state directory: the gateway's counters, the proxy's bytes, where each run started.
COUNTERS = "counters"
TRANSFER = "transfer"
RUNS = "runs"


def touch_activity(state_dir: Path, sandbox_id: str) -> None:
    """Mark a model call of the sandbox: ``activity/<id>``'s mtime is its last one."""
    path = state_dir / "activity" / sandbox_id
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.touch()
        os.utime(path)
    except OSError as e:
        log.warning("gateway: cannot record activity of %s: %s", sandbox_id, type(e).__name__)


def count_call(
    state_dir: Path,
    sandbox_id: str,
    bytes_in: int,
    bytes_out: int,
    status: int,
    tokens: tuple[int, int] | None = None,
) -> None:
    """Add one request to the sandbox's counters (``tokens``: the input and output tokens the upstream
    reported for it, None when it reported none or they could not be read).

    Writers serialize on a lock file (gateways may share the directory); the JSON is replaced
    atomically, so a reader without the lock sees the old counts or the new, never half a file."""

    def add(counters: dict[str, Any]) -> None:
        counters["requests"] = int(counters.get("requests", 0)) + 1
        counters["bytes_in"] = int(counters.get("bytes_in", 0)) + bytes_in
        counters["bytes_out"] = int(counters.get("bytes_out", 0)) + bytes_out
        by_status = counters.setdefault("status", {})
        label = str(status or "none")
        by_status[label] = int(by_status.get(label, 0)) + 1
        if tokens is not None:
            counters["tokened"] = int(counters.get("tokened", 0)) + 1
            counters["input_tokens"] = int(counters.get("input_tokens", 0)) + tokens[0]
            counters["output_tokens"] = int(counters.get("output_tokens", 0)) + tokens[1]

    _update(state_dir, COUNTERS, sandbox_id, add)


def count_transfer(state_dir: Path, moved: dict[str, tuple[int, int]]) -> None:
    """Add the bytes the proxy moved for each sandbox since the last call (``moved[id]`` is (into the
    sandbox, out of it)) to ``transfer/<id>.json``; same locking as :func:`count_call`."""
    for sandbox_id, (into, out_of) in moved.items():

        def add(counters: dict[str, Any], into: int = into, out_of: int = out_of) -> None:
            counters["bytes_in"] = int(counters.get("bytes_in", 0)) + into
            counters["bytes_out"] = int(counters.get("bytes_out", 0)) + out_of

        _update(state_dir, TRANSFER, sandbox_id, add)


def _update(
    state_dir: Path, folder_name: str, sandbox_id: str, change: Callable[[dict[str, Any]], None]
) -> None:
    folder = state_dir / folder_name
    path = folder / f"{sandbox_id}.json"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder / f".{sandbox_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                counters = _mapping(json.loads(path.read_text()))  # not an object: counted afresh
            except FileNotFoundError:
                counters = {}
            change(counters)
            tmp = folder / f".{sandbox_id}.json.tmp"
            tmp.write_text(json.dumps(counters, sort_keys=True))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
    except (OSError, ValueError) as e:
        log.warning("egress: cannot count for %s in %s: %s", sandbox_id, folder_name, type(e).__name__)


# ------------------------------------------------------------------- the backend's side: one run's usage


def read_counts(state_dir: Path, sandbox_id: str) -> dict[str, Any]:
    """The sandbox's counters since it was first seen: the gateway's and the proxy's, as written."""
    found: dict[str, Any] = {}
    for name in (COUNTERS, TRANSFER):
        try:
            loaded = json.loads((state_dir / name / f"{sandbox_id}.json").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            loaded = {}
        found[name] = loaded if isinstance(loaded, dict) else {}
    return found


def start_run(state_dir: Path, sandbox_id: str) -> None:
    """Mark the start of a run (a container started for a create or a resume): what the counters hold
    now is what :func:`run_usage` subtracts. The counters themselves only grow (metrics read them)."""
    folder = state_dir / RUNS
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = folder / f".{sandbox_id}.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(read_counts(state_dir, sandbox_id), sort_keys=True))
    os.replace(tmp, folder / f"{sandbox_id}.json")


def forget_run(state_dir: Path, sandbox_id: str) -> None:
    """Drop the sandbox's run mark and counters (it is destroyed: no run of it follows)."""
    for name in (RUNS, TRANSFER):
        (state_dir / name / f"{sandbox_id}.json").unlink(missing_ok=True)


def run_usage(state_dir: Path, sandbox_id: str) -> dict[str, Any]:
    """What the counters grew by since :func:`start_run`: ``bytes_in`` / ``bytes_out`` (into and out of
    the sandbox, through the proxy and the gateway together), ``requests``, ``input_tokens``,
    ``output_tokens`` (None when requests were made and none reported tokens) and ``status``."""
    now = read_counts(state_dir, sandbox_id)
    try:
        base = _mapping(json.loads((state_dir / RUNS / f"{sandbox_id}.json").read_text()))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        base = {}

    def grew(name: str, field: str) -> int:
        return max(0, _int(now[name].get(field)) - _int(_mapping(base.get(name)).get(field)))

    was_status = _mapping(_mapping(base.get(COUNTERS)).get("status"))
    status = {
        str(code): _int(count) - _int(was_status.get(code))
        for code, count in _mapping(now[COUNTERS].get("status")).items()
        if _int(count) - _int(was_status.get(code)) > 0
    }
    requests = grew(COUNTERS, "requests")
    tokened = grew(COUNTERS, "tokened")
    unknown = requests > 0 and tokened == 0
    return {
        # The gateway counts request bodies as its "in" (from the sandbox) and answers as "out".
        "bytes_in": grew(TRANSFER, "bytes_in") + grew(COUNTERS, "bytes_out"),
        "bytes_out": grew(TRANSFER, "bytes_out") + grew(COUNTERS, "bytes_in"),
        "requests": requests,
        "input_tokens": None if unknown else grew(COUNTERS, "input_tokens"),
        "output_tokens": None if unknown else grew(COUNTERS, "output_tokens"),
        "status": status,
    }


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    """A count as written, or 0 for anything else (a hand-edited or foreign file)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
