"""Process workers for the replica tests (importable, so multiprocessing's spawn can run them)."""

from __future__ import annotations

import time
from typing import Any

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.errors import SandboxBusy


def turn_worker(
    env: dict[str, str], conversation: str, kind: str, hold: float, barrier: Any, results: Any
) -> None:
    """Start a turn on ``conversation`` at the same moment as every other worker; report the outcome."""
    try:
        service = build_service(env)
        service.list()  # connect before the start line, so the race is about the turn
        barrier.wait(timeout=60)
        try:
            with service.turn(conversation, kind) as sbx:
                results.put(("won", sbx.id))
                time.sleep(hold)
        except SandboxBusy as exc:
            results.put(("busy", exc.sandbox_id))
    except Exception as exc:
        results.put(("error", repr(exc)))
