"""Streaming an exec's output: the bounded collector every provider fills, and the iterator forms.

A provider hands each chunk to an :class:`OutputCollector` as it arrives. The collector keeps at most
``limit`` bytes of each stream for the ExecResult (memory stays bounded whatever a command prints) and
passes every chunk, the ones past the bound included, to the caller's callbacks: output beyond the bound
is never silently lost, ``truncated`` says the result holds only its start.

:class:`ExecStream` turns the callbacks into ``for stream, chunk in ...``; :class:`AsyncExecStream` into
``async for``. Both hold at most ``max_chunks`` chunks between the command and the consumer: a slow
consumer slows the command's output (its pipe fills), it never grows a buffer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal

from sandbox_lifecycle.core.errors import ExecTimeout
from sandbox_lifecycle.core.ports import ExecResult, OutputCallback

if TYPE_CHECKING:
    # asyncio is imported when an AsyncExecStream starts: every exec reaches this module, and the
    # event loop (with ssl) is a large share of a short command's start-up.
    import asyncio
    from concurrent.futures import Future

__all__ = ["STDERR", "STDOUT", "AsyncExecStream", "ExecStream", "OutputCollector", "StreamName"]

# Which stream a chunk came from; a consumer matches it exhaustively (a third name fails mypy there).
StreamName = Literal["stdout", "stderr"]
STDOUT: Final = "stdout"
STDERR: Final = "stderr"
# Chunks in flight between a command and a consumer of an iterator form; a chunk is one read of the
# provider's stream (Docker frames are at most 32 KiB), so this bounds memory to a few MiB.
DEFAULT_MAX_CHUNKS = 64
# How often a producer blocked on a full queue checks that the consumer has not gone away.
_POLL_S = 0.1

Run = Callable[[OutputCallback, OutputCallback], ExecResult]


class OutputCollector:
    """An exec's output: the first ``limit`` bytes of each stream kept, every chunk passed on.

    A callback that raises gets no further chunks (the command's output is still read, so it never
    blocks on a full pipe); the error is raised by :meth:`result` once the command has ended.
    """

    def __init__(
        self,
        limit: int,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> None:
        if limit < 0:
            raise ValueError(f"max_output_bytes must be >= 0, got {limit!r}")
        self.limit = limit
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False
        self.callback_error: Exception | None = None
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr

    def add_stdout(self, data: bytes | None) -> None:
        self._add(self.stdout, self._on_stdout, data)

    def add_stderr(self, data: bytes | None) -> None:
        self._add(self.stderr, self._on_stderr, data)

    def _add(self, buffer: bytearray, callback: OutputCallback | None, data: bytes | None) -> None:
        if not data:
            return
        room = self.limit - len(buffer)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            buffer += data[:room]
        if callback is not None and self.callback_error is None:
            try:
                callback(bytes(data))
            except Exception as exc:  # raised in the caller's thread once the command has ended
                self.callback_error = exc

    def result(self, exit_code: int) -> ExecResult:
        if self.callback_error is not None:
            raise self.callback_error
        return ExecResult(exit_code, bytes(self.stdout), bytes(self.stderr), self.truncated)

    def timed_out(self, command: str, timeout: float) -> ExecTimeout:
        """The ExecTimeout to raise, carrying what the command printed before it was killed."""
        return ExecTimeout(command, timeout, bytes(self.stdout), bytes(self.stderr), self.truncated)


class _End:
    """The marker after the last chunk."""


_END: Final = _End()


class ExecStream:
    """``for stream, chunk in service.exec_stream(...)``: ``stream`` is ``"stdout"`` or ``"stderr"``,
    ``chunk`` the bytes as they arrived. After the loop, :attr:`result` is the ExecResult (exit code,
    bounded output); an error of the exec (ExecTimeout with its partial output, CommandFailed under
    ``check=True``) is raised by the iteration once the chunks before it were yielded.

    The command starts on the first ``next()``, in a thread of its own. Leaving early (``break``,
    ``close()``, the ``with`` block) stops the delivery; the command runs on until it exits or its timeout
    kills it, as a command whose caller went away does.
    """

    def __init__(self, run: Run, *, max_chunks: int = DEFAULT_MAX_CHUNKS) -> None:
        self._run = run
        self._queue: queue.Queue[tuple[StreamName, bytes] | _End] = queue.Queue(max(1, max_chunks))
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: ExecResult | None = None
        self._error: BaseException | None = None
        self._done = False

    def _put(self, item: tuple[StreamName, bytes] | _End) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        try:
            self._result = self._run(lambda b: self._put((STDOUT, b)), lambda b: self._put((STDERR, b)))
        except BaseException as exc:  # handed to the consumer's thread
            self._error = exc
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[tuple[StreamName, bytes]]:
        return self

    def __next__(self) -> tuple[StreamName, bytes]:
        if self._done:
            raise StopIteration
        if self._closed.is_set():
            raise RuntimeError("the exec stream was closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="exec-stream", daemon=True)
            self._thread.start()
        # Bounded in time: the exec has a timeout, and the worker always ends with the marker.
        item = self._queue.get()
        if isinstance(item, _End):
            self._done = True
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    @property
    def result(self) -> ExecResult:
        if self._result is None:
            raise RuntimeError("the command's result is known once the stream is read to its end")
        return self._result

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncExecStream:
    """``async for stream, chunk in service.exec_stream(...)``: :class:`ExecStream` for asyncio.

    The command runs in a worker thread (``submit`` puts it on the service's exec pool); chunks reach the
    loop through ``call_soon_threadsafe``, so the loop never waits on the command. At most
    ``max_chunks`` chunks wait for the consumer; beyond that the worker thread (never the loop) waits.
    """

    def __init__(
        self,
        run: Run,
        submit: Callable[[Callable[[], ExecResult]], asyncio.Future[ExecResult]],
        *,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
    ) -> None:
        self._run = run
        self._submit = submit
        self._slots = threading.Semaphore(max(1, max_chunks))
        self._closed = threading.Event()
        self._queue: asyncio.Queue[tuple[StreamName, bytes] | _End] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[ExecResult] | None = None
        self._done = False

    def _post(self, item: tuple[StreamName, bytes]) -> None:
        """In the worker thread: wait for a free slot (or the consumer's leaving), then hand over."""
        assert self._loop is not None and self._queue is not None
        while not self._closed.is_set():
            if self._slots.acquire(timeout=_POLL_S):
                try:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    self._closed.set()
                return

    def _start(self) -> None:
        import asyncio  # why here: a sync caller never loads asyncio (tests/**/test_imports.py)

        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        queue_ = self._queue

        def run() -> ExecResult:
            return self._run(lambda b: self._post((STDOUT, b)), lambda b: self._post((STDERR, b)))

        self._future = self._submit(run)
        # Chunks were posted with call_soon_threadsafe before the worker returned, so the marker the
        # future's completion puts comes after the last of them.
        self._future.add_done_callback(lambda _: queue_.put_nowait(_END))

    def __aiter__(self) -> AsyncExecStream:
        return self

    async def __anext__(self) -> tuple[StreamName, bytes]:
        if self._done:
            raise StopAsyncIteration
        if self._closed.is_set():
            raise RuntimeError("the exec stream was closed")
        if self._queue is None:
            self._start()
        assert self._queue is not None and self._future is not None
        item = await self._queue.get()
        if isinstance(item, _End):
            self._done = True
            self._future.result()  # the exec's error, if it had one
            raise StopAsyncIteration
        self._slots.release()
        return item

    @property
    def result(self) -> ExecResult:
        if self._future is None or not self._future.done() or not self._done:
            raise RuntimeError("the command's result is known once the stream is read to its end")
        return self._future.result()

    def close(self) -> None:
        """Stop the delivery; the command runs on until it exits or times out (see ExecStream)."""
        self._closed.set()
        if self._future is not None and not self._future.done():
            # Its outcome is nobody's now; retrieve it so asyncio does not log it as unretrieved.
            self._future.add_done_callback(_retrieve)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> AsyncExecStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _retrieve(future: asyncio.Future[ExecResult] | Future[ExecResult]) -> None:
    if not future.cancelled():
        future.exception()


def argv_of(command: Sequence[str] | str) -> list[str]:
    """The argv an exec runs: a string is a shell command line, as an agent writes one; a list is an argv,
    run as it is."""
    return ["bash", "-lc", command] if isinstance(command, str) else list(command)
