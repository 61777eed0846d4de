"""Reading the event log live: the store's commit-order feed (``read_all``), once or followed.

The feed is gap-free in commit order (the stores guarantee a reader tailing ``position > last`` never
skips an event that commits late), so following it is paging on from the last position seen and, when
nothing is new, polling again after a pause that doubles up to a bound while the log stays quiet.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.events.records import RecordedEvent

if TYPE_CHECKING:
    # asyncio (with ssl, which it loads) is imported by ``atail`` when it runs: the service reaches this
    # module, and a short command that never awaits should not pay for the event loop.
    import asyncio

PAGE = 1000
# The first pause after an empty poll, and the longest: a quiet log is polled every second at most, a
# busy one is read as fast as pages come.
MIN_POLL_S = 0.05
MAX_POLL_S = 1.0


class Backoff:
    """Pauses between empty polls: MIN_POLL_S doubling up to MAX_POLL_S, back to the start on news."""

    def __init__(self, first: float = MIN_POLL_S, most: float = MAX_POLL_S) -> None:
        if not 0 < first <= most:
            raise ValueError(f"poll pauses must satisfy 0 < first <= most, got {first} and {most}")
        self._first, self._most, self._next = first, most, first

    def reset(self) -> None:
        self._next = self._first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self._most)
        return delay


def event_id(event: RecordedEvent) -> str:
    """A stable id of an event: its stream and version, unique in the log and the same on every
    delivery (a receiver drops redeliveries by it)."""
    return f"{event.stream_id}:{event.version}"


def event_json(event: RecordedEvent) -> dict[str, Any]:
    """One event as `sandboxctl events --json` prints it and the relay posts it.

    Everything the log holds for the event: the log never holds a secret (the service keeps them out
    of every event it appends), so nothing is left out.
    """
    meta = event.metadata
    return {
        "event_id": event_id(event),
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.type,
        "schema_version": event.schema_version,
        "occurred_at": event.occurred_at.isoformat(),
        "reason": meta.get("reason"),
        "actor": meta.get("actor"),
        "metadata": meta,
        "data": event.data,
    }


def _matching(page: list[RecordedEvent], stream_id: str | None) -> list[RecordedEvent]:
    return page if stream_id is None else [e for e in page if e.stream_id == stream_id]


def tail(
    store: EventStore,
    after_position: int = 0,
    follow: bool = False,
    *,
    stream_id: str | None = None,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> Iterator[RecordedEvent]:
    """Events after ``after_position`` in commit order; with ``follow``, wait for new ones until
    ``stop`` is set (or the caller closes the iterator). ``stream_id`` keeps one sandbox's events."""
    if after_position < 0:
        raise ValueError(f"after_position must be >= 0, not {after_position}")
    stop = stop or threading.Event()
    backoff = backoff or Backoff()
    position = after_position
    while not stop.is_set():
        page = store.read_all(position, PAGE)
        if page:
            position = page[-1].position
            backoff.reset()
            yield from _matching(page, stream_id)
            if len(page) == PAGE:
                continue
        if not follow:
            return
        stop.wait(backoff.next())


async def atail(
    read_all: Callable[[int, int], asyncio.Future[list[RecordedEvent]]],
    after_position: int = 0,
    follow: bool = False,
    *,
    stream_id: str | None = None,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> AsyncIterator[RecordedEvent]:
    """``tail`` for asyncio: ``read_all`` runs the store's read off the loop; setting ``stop``,
    cancelling the task or closing the iterator stops following."""
    import asyncio  # why here: a sync caller never loads asyncio (tests/**/test_imports.py)

    if after_position < 0:
        raise ValueError(f"after_position must be >= 0, not {after_position}")
    stop = stop or threading.Event()
    backoff = backoff or Backoff()
    position = after_position
    while not stop.is_set():
        page = await read_all(position, PAGE)
        if page:
            position = page[-1].position
            backoff.reset()
            for e in _matching(page, stream_id):
                yield e
            if len(page) == PAGE:
                continue
        if not follow:
            return
        await asyncio.sleep(backoff.next())
