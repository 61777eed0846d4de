"""Projection rebuilds folded in parallel processes, each claiming ranges of the streams in turn.

A fold is pure Python, so threads would share one core; processes each read and fold their own ranges
straight from the database (``read_streams``: each reads only its own rows) and send back plain tuples
(cheap to pickle). A rebuild needs each stream in version order, never the global commit order, so
ranges of stream ids fold independently.

The calling process folds too, instead of waiting: the workers are spawned (see ``parallel_rebuild``),
so each needs a fresh interpreter and its imports (~0.5 s) before folding anything. The streams are cut
into many more ranges than processes, and every process claims the next unclaimed range from a shared
counter until none is left: whoever starts late or runs slower simply folds fewer ranges.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import fields
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.replay import rebuild
from sandbox_lifecycle.events.records import Deadline, Projection, SandboxRow
from sandbox_lifecycle.events.store import open_store

_ROW_FIELDS = tuple(f.name for f in fields(SandboxRow))
# Ranges per process: more ranges balance better (a process finishes at most one range after the
# others), each costs one more range query.
_RANGES_PER_PROCESS = 16

Range = tuple[str, str | None]
Folded = list[tuple[tuple[Any, ...], ...]]

# The next unclaimed range, shared by every process of one rebuild (set in workers by _init_worker).
_next_range: Synchronized[int] | None = None


@contextmanager
def _without_gc() -> Iterator[None]:
    """The cyclic garbage collector off while folding, as it was before afterwards.

    A fold allocates millions of short-lived, acyclic objects (records, payload dicts, events, states):
    the collector frees none of them, yet its passes over every batch still in flight, and over the
    projections piling up, cost about 30% of a rebuild (bench/rebuild_bench.py). Reference counting
    still frees everything as before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _init_worker(counter: Synchronized[int]) -> None:
    global _next_range
    _next_range = counter


def _claimed(counter: Synchronized[int], total: int) -> Iterator[int]:
    """Indexes of ranges claimed from ``counter``, one at a time, until none is left."""
    while True:
        with counter.get_lock():
            index = counter.value
            if index >= total:
                return
            counter.value = index + 1
        yield index


def _fold_claimed(
    url: str, policy: Policy, ranges: list[Range], counter: Synchronized[int]
) -> dict[int, list[Projection]]:
    """Fold ranges claimed from ``counter`` until none is left: {range index: its projections}."""
    store = open_store(url)
    try:
        with _without_gc():
            return {index: rebuild(store, policy, *ranges[index]) for index in _claimed(counter, len(ranges))}
    except BaseException:
        # Nobody needs the other ranges any more: let every process stop after its current one.
        with counter.get_lock():
            counter.value = len(ranges)
        raise
    finally:
        store.close()


def _worker(url: str, policy: Policy, ranges: list[Range]) -> dict[int, Folded]:
    """``_fold_claimed`` in a worker process, its projections as plain tuples for the trip back."""
    assert _next_range is not None, "the pool initialiser sets the counter"
    folded = _fold_claimed(url, policy, ranges, _next_range)
    with _without_gc():
        return {
            index: [
                (
                    tuple(getattr(p.row, f) for f in _ROW_FIELDS),
                    *((d.sandbox_id, d.kind, d.due_at, d.version) for d in p.deadlines),
                )
                for p in projections
            ]
            for index, projections in folded.items()
        }


def _unpack(folded: Folded) -> list[Projection]:
    return [
        Projection(SandboxRow(*row), tuple(Deadline(*d) for d in deadlines)) for row, *deadlines in folded
    ]


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def parallel_rebuild(url: str, policy: Policy, workers: int | None = None) -> list[Projection]:
    """Every sandbox's projection, folded by ``workers`` processes (this one included).

    Projections come ordered by stream id (in the database's order), whatever the number of workers.
    """
    count = workers or default_workers()
    store = open_store(url)
    try:
        bounds = store.split_streams(count * _RANGES_PER_PROCESS) if count > 1 else []
        if not bounds:  # one process asked for, or at most one stream: nothing to share out
            with _without_gc():
                return rebuild(store, policy)
    finally:
        # Closed before any worker starts, so no connection of this process is around for them.
        store.close()
    ranges: list[Range] = list(zip(["", *bounds], [*bounds, None], strict=True))
    # spawn, not fork: the caller may hold database connections and threads a fork would copy.
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0)
    with ProcessPoolExecutor(
        count - 1, mp_context=ctx, initializer=_init_worker, initargs=(counter,)
    ) as pool:
        futures = [pool.submit(_worker, url, policy, ranges) for _ in range(count - 1)]
        mine = _fold_claimed(url, policy, ranges, counter)
        theirs = {index: part for future in futures for index, part in future.result().items()}
    with _without_gc():
        return [
            p
            for index in range(len(ranges))
            for p in (mine[index] if index in mine else _unpack(theirs[index]))
        ]
