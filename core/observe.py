"""What the service tells an observer: transitions, provider calls, snapshots, timers, orphans, usage.

The core knows no metrics library. It calls an :class:`Observer` (by default one that does nothing);
``adapters/observability/metrics.py`` implements it with prometheus_client, and a backend may pass its
own. An observer must be cheap and must not raise: it is called on the hot path, and a failure in it is
logged and swallowed (:class:`SafeObserver`), never allowed to fail a sandbox operation.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from sandbox_lifecycle.core.ports import SnapshotInfo

if TYPE_CHECKING:  # the event types come with it, which `sandboxctl ls` must not load
    from sandbox_lifecycle.core.usage import Usage

__all__ = [
    "NULL_OBSERVER",
    "NullObserver",
    "ObservedProvider",
    "Observer",
    "SafeObserver",
    "in_log_context",
    "in_sandbox_context",
    "log_context",
    "log_fields",
]

log = logging.getLogger("sandbox_lifecycle.observe")


class Observer(Protocol):
    def transition(self, *, kind: str | None, from_state: str, to_state: str, reason: str) -> None:
        """A sandbox moved from one state to another (recorded in the log)."""

    def provider_call(self, operation: str, seconds: float, *, ok: bool) -> None:
        """One call to the provider (``create``, ``exec``, ``suspend``...) took ``seconds``."""

    def snapshot(self, direction: str, nbytes: int | None, seconds: float) -> None:
        """A workspace snapshot was taken (``upload``, at suspend) or restored (``download``, at resume)."""

    def timer_fired(self, kind: str, lag_seconds: float) -> None:
        """A deadline (``idle``, ``retention``, ``lease``) was handled ``lag_seconds`` after it was due."""

    def orphan_removed(self, what: str) -> None:
        """The reconciler removed a leftover: an ``instance``, a ``snapshot`` or an ``upload``."""

    def usage(self, *, kind: str | None, usage: Usage) -> None:
        """A run of a ``kind`` sandbox ended (suspend or destroy) having used ``usage`` (recorded)."""


class NullObserver:
    def transition(self, *, kind: str | None, from_state: str, to_state: str, reason: str) -> None:
        pass

    def provider_call(self, operation: str, seconds: float, *, ok: bool) -> None:
        pass

    def snapshot(self, direction: str, nbytes: int | None, seconds: float) -> None:
        pass

    def timer_fired(self, kind: str, lag_seconds: float) -> None:
        pass

    def orphan_removed(self, what: str) -> None:
        pass

    def usage(self, *, kind: str | None, usage: Usage) -> None:
        pass


NULL_OBSERVER: Observer = NullObserver()


class SafeObserver:
    """Forwards to ``inner``; an exception there is logged, not raised into the operation observed."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self.inner, name)(*args, **kwargs)
        except Exception:
            log.exception("observer %s failed; metrics may be incomplete", name)

    def transition(self, *, kind: str | None, from_state: str, to_state: str, reason: str) -> None:
        self._call("transition", kind=kind, from_state=from_state, to_state=to_state, reason=reason)

    def provider_call(self, operation: str, seconds: float, *, ok: bool) -> None:
        self._call("provider_call", operation, seconds, ok=ok)

    def snapshot(self, direction: str, nbytes: int | None, seconds: float) -> None:
        self._call("snapshot", direction, nbytes, seconds)

    def timer_fired(self, kind: str, lag_seconds: float) -> None:
        self._call("timer_fired", kind, lag_seconds)

    def orphan_removed(self, what: str) -> None:
        self._call("orphan_removed", what)

    def usage(self, *, kind: str | None, usage: Usage) -> None:
        # An observer written before usage was measured has no such method: nothing to report to it.
        if hasattr(self.inner, "usage"):
            self._call("usage", kind=kind, usage=usage)


class ObservedProvider:
    """The provider, with every method call timed for the observer; attributes pass through unchanged.

    A proxy rather than a call site per operation: every provider method (those other branches add
    too) is measured without the service naming them.
    """

    def __init__(self, provider: Any, observer: Observer) -> None:
        self._provider = provider
        self._observer = observer

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._provider, attr)
        if attr.startswith("_") or not callable(value):
            return value
        return self._timed(attr, value)

    def _timed(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        observer = self._observer

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            ok = False
            try:
                result = call(*args, **kwargs)
                ok = True
                return result
            finally:
                seconds = time.perf_counter() - start
                observer.provider_call(operation, seconds, ok=ok)
                if ok and operation == "suspend" and isinstance(result, SnapshotInfo):
                    observer.snapshot("upload", result.bytes, seconds)
                elif ok and operation == "resume":
                    snap = next((a for a in (*args, *kwargs.values()) if isinstance(a, SnapshotInfo)), None)
                    observer.snapshot("download", snap.bytes if snap else None, seconds)

        return timed


# What the log lines of the work in progress are about: the sandbox and the correlation id of the
# transition. A contextvar, so threads and asyncio tasks each carry their own; the logging adapter
# (adapters/observability/logs.py) adds it to every line.
_NO_FIELDS: Mapping[str, str] = MappingProxyType({})
_LOG_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("sandbox_lifecycle_log_context", default=_NO_FIELDS)


def log_fields() -> Mapping[str, str]:
    """The sandbox_id and correlation_id of the work in progress (empty outside of one)."""
    return _LOG_CONTEXT.get()


@contextmanager
def log_context(*, sandbox_id: str | None = None, correlation_id: str | None = None) -> Iterator[None]:
    """Log lines inside the block carry these ids (unset ones keep the enclosing block's)."""
    fields = dict(_LOG_CONTEXT.get())
    if sandbox_id:
        fields["sandbox_id"] = sandbox_id
    if correlation_id:
        fields["correlation_id"] = correlation_id
    token = _LOG_CONTEXT.set(MappingProxyType(fields))
    try:
        yield
    finally:
        _LOG_CONTEXT.reset(token)


P = ParamSpec("P")
R = TypeVar("R")


def in_log_context(
    drive: Callable[Concatenate[Any, Any, str, P], R],
) -> Callable[Concatenate[Any, Any, str, P], R]:
    """For ``drive(self, state, correlation_id, ...)``: its log lines name the sandbox and the id."""

    def wrapper(self: Any, state: Any, correlation_id: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with log_context(sandbox_id=state.id, correlation_id=correlation_id):
            return drive(self, state, correlation_id, *args, **kwargs)

    return functools.update_wrapper(wrapper, drive)


def in_sandbox_context(
    call: Callable[Concatenate[Any, str, P], R],
) -> Callable[Concatenate[Any, str, P], R]:
    """For a method taking ``(self, sandbox_id, ...)``: its lines (and its provider's) name the sandbox."""

    def wrapper(self: Any, sandbox_id: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with log_context(sandbox_id=sandbox_id):
            return call(self, sandbox_id, *args, **kwargs)

    return functools.update_wrapper(wrapper, call)
