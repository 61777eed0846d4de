"""Progress of a long transfer (a `cp`, a snapshot upload or download), for whoever shows it.

The code that moves the bytes calls :func:`advance`; a caller that wants a progress bar wraps the call
in ``with reporting(callback):``. A contextvar, so a backend serving many requests at once sees only
its own; without a callback :func:`advance` costs one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_CALLBACK: ContextVar[Callable[[int], None] | None] = ContextVar("sandbox_lifecycle_progress", default=None)


def advance(nbytes: int) -> None:
    """``nbytes`` more were moved."""
    callback = _CALLBACK.get()
    if callback is not None and nbytes:
        callback(nbytes)


@contextmanager
def reporting(callback: Callable[[int], None]) -> Iterator[None]:
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)
