"""What the gateway records per sandbox: the time of its last model call and counters of its calls.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("sandbox_lifecycle.egress.gateway")


def touch_activity(state_dir: Path, sandbox_id: str) -> None:
    """Mark a model call of the sandbox: ``activity/<id>``'s mtime is its last one."""
    path = state_dir / "activity" / sandbox_id
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.touch()
        os.utime(path)
    except OSError as e:
        log.warning("gateway: cannot record activity of %s: %s", sandbox_id, type(e).__name__)


def count_call(state_dir: Path, sandbox_id: str, bytes_in: int, bytes_out: int, status: int) -> None:
    """Add one request to the sandbox's counters.

    Writers serialize on a lock file (gateways may share the directory); the JSON is replaced
    atomically, so a reader without the lock sees the old counts or the new, never half a file."""
    folder = state_dir / "counters"
    path = folder / f"{sandbox_id}.json"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder / f".{sandbox_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                counters = json.loads(path.read_text())
            except FileNotFoundError:
                counters = {}
            counters["requests"] = int(counters.get("requests", 0)) + 1
            counters["bytes_in"] = int(counters.get("bytes_in", 0)) + bytes_in
            counters["bytes_out"] = int(counters.get("bytes_out", 0)) + bytes_out
            by_status = counters.setdefault("status", {})
            label = str(status or "none")
            by_status[label] = int(by_status.get(label, 0)) + 1
            tmp = folder / f".{sandbox_id}.json.tmp"
            tmp.write_text(json.dumps(counters, sort_keys=True))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
    except (OSError, ValueError) as e:
        log.warning("gateway: cannot count a request of %s: %s", sandbox_id, type(e).__name__)
