"""Process workers of the capacity tests (importable, for the spawn start method)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sandbox_lifecycle.events.records import CapacityLimit, CapacityRefused, ConcurrencyError
from sandbox_lifecycle.events.store import open_store
from tests.support.store_helpers import event, projection, row

LIVE_STATES = ("creating", "idle", "running", "suspending", "resuming", "destroying")


def churn(url: str, worker: int, rounds: int, limit: int, barrier: Any, results: Any) -> None:
    """Make one sandbox live under the limit, then suspend it, ``rounds`` times; report the counts."""
    store = open_store(url)
    sid, version, won, refused = f"w{worker}", 0, 0, 0
    cap = (CapacityLimit(LIVE_STATES, limit),)
    try:
        store.get_sandbox(sid)  # connect before the start line
        barrier.wait(timeout=60)
        for _ in range(rounds):
            live = row(sid, state="idle", version=version + 1)
            try:
                store.append(sid, version, [event("Live")], projection=projection(live), capacity=cap)
            except CapacityRefused:
                refused += 1
                continue
            except ConcurrencyError:
                results.put(f"error: {sid} lost its own version")
                return
            version += 1
            won += 1
            down = replace(live, state="suspended", version=version + 1)
            store.append(sid, version, [event("Down")], projection=projection(down))
            version += 1
        results.put((won, refused))
    except Exception as exc:
        results.put(f"error: {exc!r}")
    finally:
        store.close()
