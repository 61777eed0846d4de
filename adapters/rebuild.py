"""Projection rebuilds folded in parallel processes, one partition of the streams each.

A fold is pure Python, so threads would share one core; processes each read and fold their own
partition straight from the database and send back plain tuples (cheap to pickle).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from core.projection import Policy
from core.replay import rebuild
from events.records import Deadline, Projection, SandboxRow

_ROW_FIELDS = SandboxRow.__slots__


def _fold_partition(url: str, policy: Policy, index: int, count: int) -> list[tuple[tuple[Any, ...], ...]]:
    from events.store import SqlEventStore

    store = SqlEventStore(url)
    try:
        return [
            (
                tuple(getattr(p.row, f) for f in _ROW_FIELDS),
                *((d.sandbox_id, d.kind, d.due_at, d.version) for d in p.deadlines),
            )
            for p in rebuild(store, policy, partition=(index, count))
        ]
    finally:
        store.close()


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def parallel_rebuild(url: str, policy: Policy, workers: int | None = None) -> list[Projection]:
    count = workers or default_workers()
    if count == 1:
        from events.store import SqlEventStore

        store = SqlEventStore(url)
        try:
            return rebuild(store, policy)
        finally:
            store.close()
    # spawn, not fork: the parent may hold database connections and threads a fork would copy.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(count, mp_context=ctx) as pool:
        parts = pool.map(_fold_partition, [url] * count, [policy] * count, range(count), [count] * count)
        return [
            Projection(SandboxRow(*row), tuple(Deadline(*d) for d in deadlines))
            for part in parts
            for row, *deadlines in part
        ]
