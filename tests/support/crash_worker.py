"""A process that runs one lifecycle operation and SIGKILLs itself at a chosen boundary.

    python -m tests.support.crash_worker OP BOUNDARY TARGET [NOW_ISO]

OP is create | suspend | resume | destroy | gc; BOUNDARY is before_intent | after_intent |
after_side_effect | after_outcome; TARGET is the conversation id (create) or the sandbox id. The service is
built from the environment exactly as in production; only the kill points are added, by wrapping the
store's append and the provider's calls.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from typing import Any

from sandbox_lifecycle.adapters.composition.bootstrap import build_service

INTENT = {
    "create": "CreationRequested",
    "suspend": "SuspendRequested",
    "resume": "ResumeRequested",
    "destroy": "DestroyRequested",
    "gc": "DestroyRequested",
}
OUTCOME = {
    "create": "Created",
    "suspend": "Suspended",
    "resume": "Resumed",
    "destroy": "Destroyed",
    "gc": "Destroyed",
}
# The provider call after which the side effect is complete.
SIDE_EFFECT = {
    "create": "create",
    "suspend": "suspend",
    "resume": "resume",
    "destroy": "destroy",
    "gc": "delete_snapshot",
}


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(op: str, boundary: str, target: str, now: str | None = None) -> None:
    service = build_service()
    store, provider = service.store, service.provider
    real_append = store.append

    def append(stream_id: str, expected_version: int, events: Any, **kw: Any) -> Any:
        types = {e.type for e in events}
        if boundary == "before_intent" and INTENT[op] in types:
            die()
        result = real_append(stream_id, expected_version, events, **kw)
        if boundary == "after_intent" and INTENT[op] in types:
            die()
        if boundary == "after_outcome" and OUTCOME[op] in types:
            die()
        return result

    store.append = append
    # A service that can write is built with its real provider (bootstrap builds it before the log).
    real = provider
    call_name = SIDE_EFFECT[op]
    real_call = getattr(real, call_name)

    def side_effect(*args: Any, **kw: Any) -> Any:
        result = real_call(*args, **kw)
        if boundary == "after_side_effect":
            die()
        return result

    setattr(real, call_name, side_effect)

    if op == "create":
        service.create("data-app", target)
    elif op == "suspend":
        service.suspend(target)
    elif op == "resume":
        service.resume(target)
    elif op == "destroy":
        service.destroy(target)
    elif op == "gc":
        service.fire_due(datetime.fromisoformat(now) if now else None)
    print("completed without reaching the kill point", flush=True)
    sys.exit(3)


if __name__ == "__main__":
    main(*sys.argv[1:])
