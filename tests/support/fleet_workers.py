"""Process workers of the capacity tests (importable, so multiprocessing's spawn can run them)."""

from __future__ import annotations

import time
from typing import Any

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.errors import CapacityExceeded


def fleet_worker(env: dict[str, str], conversation: str, turns: int, barrier: Any, results: Any) -> None:
    """Run ``turns`` turns on ``conversation`` (each one command), reporting each turn's outcome:
    ``("done", seconds)`` or ``("capacity", seconds waited)``."""
    try:
        service = build_service(env)
        service.list()  # connect before the start line
        barrier.wait(timeout=120)
        for _ in range(turns):
            started = time.monotonic()
            try:
                with service.turn(conversation, "data-app") as sbx:
                    sbx.exec(["sleep", "0.2"], check=True)
                results.put(("done", time.monotonic() - started))
            except CapacityExceeded:
                results.put(("capacity", time.monotonic() - started))
    except Exception as exc:
        results.put(("error", repr(exc)))


def claim_worker(env: dict[str, str], conversation: str, barrier: Any, results: Any) -> None:
    """Open one turn on a new conversation at the same moment as the others; report the sandbox id."""
    try:
        service = build_service(env)
        service.list()
        barrier.wait(timeout=120)
        with service.turn(conversation, "data-app", keep_warm=True) as sbx:
            results.put(("ok", sbx.id))
        service.pools.settle()
    except Exception as exc:
        results.put(("error", repr(exc)))
