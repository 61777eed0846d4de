"""The asyncio face of :class:`SandboxService`: the same verbs, awaitable, never blocking the event loop.

Every call runs the sync service in a worker thread of a bounded pool this object owns. The service
sequences side effects on a sync event store and sync providers; a native-async provider would still
need threads for the store, and at the concurrency a backend sees (tens of turns) threads cost nothing
measurable over the e2b SDK's ``AsyncSandbox`` (bench/async_bench.py, docs/benchmarks.md). One code path
for both faces means one set of guarantees.

Why pools of our own and not the loop's default executor: asyncio's default pool has
``min(32, cpus + 4)`` threads (6 on a two-core host), and a turn's exec holds a thread for as long as the
command runs (the agent CLI: minutes). Six long execs would stall every other call of the application
that uses the default pool. And why two: execs get a pool apart from every other call, so however many
long (or cancelled, still running) execs fill theirs, a turn's start and its suspend never queue behind
them. ``max_workers`` bounds each pool; calls beyond it wait their turn.

Cancellation. A thread cannot be interrupted, so cancelling a task that awaits a call cancels the
*await*, not the call:

* ``exec``: the awaiting task gets ``CancelledError`` at once. An exec still queued for a thread never
  starts; one already running runs on in its worker thread until it exits or reaches its ``timeout`` (the
  providers kill it then). Inside a turn, leaving the ``async with`` suspends the sandbox, which ends the
  command sooner (Docker snapshots the workspace and removes the container; E2B pauses the sandbox). Its
  late outcome is discarded; it cannot move the sandbox on, since every write it would make is appended
  at a version that is stale by then. A turn's handle refuses calls once its turn is ending, also a call
  that was queued before and reaches its thread only then (it would otherwise resume the sandbox).
* ``turn``: entering and leaving run the sync turn's ``__enter__`` and ``__exit__`` in worker threads; the
  body holds no thread. Both run to their end even if the task is cancelled meanwhile, and the
  cancellation is re-raised after: a turn opened while its task was being cancelled is closed (and the
  sandbox suspended) before ``CancelledError`` propagates, and a cancelled exit still suspends.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import functools
import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, assert_never

from sandbox_lifecycle.core import feed
from sandbox_lifecycle.core.checkpoints import Checkpoint
from sandbox_lifecycle.core.credentials import Credentials
from sandbox_lifecycle.core.ports import ExecResult, FileEntry, OutputCallback, ProcessInfo, TransferReport
from sandbox_lifecycle.core.preview import Preview
from sandbox_lifecycle.core.processes import DEFAULT_WAIT_S, ProcessLogs
from sandbox_lifecycle.core.replay import HistoryEntry
from sandbox_lifecycle.core.rescue import RECOVER_REASON, Recovery
from sandbox_lifecycle.core.service import SandboxService, SweepReport, TurnHandle
from sandbox_lifecycle.core.streaming import AsyncExecStream
from sandbox_lifecycle.events.records import RecordedEvent, SandboxRow

log = logging.getLogger("sandbox_lifecycle")

P = ParamSpec("P")
T = TypeVar("T")

# Enough for every turn of a busy backend replica to have one exec in flight; each idle thread is cheap.
DEFAULT_MAX_WORKERS = 64

# An output callback of the async face: a plain function or a coroutine function, called on the loop.
AsyncOutputCallback = Callable[[bytes], Awaitable[None] | None]


async def _deliver(
    stream: AsyncExecStream, on_stdout: AsyncOutputCallback | None, on_stderr: AsyncOutputCallback | None
) -> ExecResult:
    """Feed the stream's chunks to the callbacks on the loop, one at a time and in order; a coroutine
    callback is awaited before the next chunk (it paces the command's output, never the loop)."""
    async with stream:
        async for name, chunk in stream:
            callback: AsyncOutputCallback | None
            match name:
                case "stdout":
                    callback = on_stdout
                case "stderr":
                    callback = on_stderr
                case _:
                    assert_never(name)
            if callback is not None:
                returned = callback(chunk)
                if inspect.isawaitable(returned):
                    await returned
        return stream.result


async def _settle(future: asyncio.Future[Any]) -> bool:
    """Wait until ``future`` is done, through any number of cancellations of this task.

    Returns whether the task was cancelled meanwhile; the caller re-raises it once it has cleaned up.
    ``asyncio.wait`` never cancels what it waits for, unlike awaiting the future itself.
    """
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    """The future's exception, marked retrieved (asyncio logs unretrieved ones), or None."""
    if future.cancelled():
        return None
    return future.exception()


class AsyncSandboxService:
    """:class:`SandboxService`, awaitable. Build it with ``sandbox_lifecycle.connect_async()``.

    ``async with service.turn(conversation_id, kind) as sbx:`` creates or resumes the conversation's
    sandbox and suspends it when the block is left, also on an exception or a cancellation.
    Close it (``await service.aclose()`` or ``async with``) to release its worker threads.
    """

    def __init__(self, service: SandboxService, *, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self._service = service
        self.max_workers = max_workers
        # Threads start on demand: an idle pool costs nothing.
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="sandbox-async")
        self._exec_executor = ThreadPoolExecutor(max_workers, thread_name_prefix="sandbox-async-exec")

    @property
    def sync(self) -> SandboxService:
        """The wrapped sync service (e.g. for a scheduler, or code that runs in a thread already)."""
        return self._service

    def _submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        return self._submit_to(self._executor, fn, *args, **kwargs)

    @staticmethod
    def _submit_to(
        pool: ThreadPoolExecutor, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        # The caller's context variables (request ids, tracing) follow the call, as asyncio.to_thread's do.
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return asyncio.get_running_loop().run_in_executor(pool, call)

    async def _call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._submit_to(self._executor, fn, *args, **kwargs)

    async def _call_exec(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._submit_to(self._exec_executor, fn, *args, **kwargs)

    async def aclose(self) -> None:
        """Stop taking calls and wait for the ones in flight (in a thread: the loop keeps running)."""

        def shutdown() -> None:
            self._executor.shutdown(wait=True)
            self._exec_executor.shutdown(wait=True)

        await asyncio.to_thread(shutdown)

    async def __aenter__(self) -> AsyncSandboxService:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------- queries

    async def get(self, sandbox_id: str) -> SandboxRow:
        return await self._call(self._service.get, sandbox_id)

    async def list(self, state: str | None = None) -> builtins.list[SandboxRow]:
        return await self._call(self._service.list, state)

    def events(
        self,
        after_position: int = 0,
        follow: bool = False,
        *,
        sandbox_id: str | None = None,
        stop: threading.Event | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """``SandboxService.events`` as an async iterator: each page is read in a worker thread, the
        pauses between polls are ``asyncio.sleep``; set ``stop``, cancel the task or close the iterator
        to stop following."""

        def read_all(position: int, limit: int) -> asyncio.Future[builtins.list[RecordedEvent]]:
            return self._submit(self._service.store.read_all, position, limit)

        return feed.atail(read_all, after_position, follow, stream_id=sandbox_id, stop=stop)

    async def history(self, sandbox_id: str) -> builtins.list[HistoryEntry]:
        return await self._call(self._service.history, sandbox_id)

    # ------------------------------------------------------------------------------------ commands

    async def create(
        self,
        kind: str,
        conversation_id: str | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str | None = None,
        reason: str = "user",
        admit: bool = True,
    ) -> SandboxRow:
        return await self._call(
            self._service.create,
            kind,
            conversation_id,
            idempotency_key=idempotency_key,
            actor=actor,
            reason=reason,
            admit=admit,
        )

    async def suspend(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        return await self._call(self._service.suspend, sandbox_id, reason=reason, actor=actor)

    async def resume(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        return await self._call(self._service.resume, sandbox_id, reason=reason, actor=actor)

    async def destroy(
        self, sandbox_id: str, *, reason: str = "user", actor: str | None = None, version: int | None = None
    ) -> SandboxRow:
        return await self._call(
            self._service.destroy, sandbox_id, reason=reason, actor=actor, version=version
        )

    async def set_egress(
        self, sandbox_id: str, allow: Sequence[str] | None, *, reason: str = "user", actor: str | None = None
    ) -> SandboxRow:
        return await self._call(self._service.set_egress, sandbox_id, allow, reason=reason, actor=actor)

    async def set_credentials(
        self,
        sandbox_id: str,
        host: str,
        headers: Mapping[str, str],
        *,
        reason: str = "user",
        actor: str | None = None,
    ) -> SandboxRow:
        """See :meth:`SandboxService.set_credentials` (core/credentials.py)."""
        return await self._call(
            self._service.set_credentials, sandbox_id, host, headers, reason=reason, actor=actor
        )

    async def touch(self, sandbox_id: str, *, actor: str | None = None, count: int = 1) -> SandboxRow:
        return await self._call(self._service.touch, sandbox_id, actor=actor, count=count)

    async def checkpoints(self, sandbox_id: str) -> builtins.list[Checkpoint]:
        return await self._call(self._service.checkpoints, sandbox_id)

    async def rewind(
        self, sandbox_id: str, to_version: int, *, reason: str = "user", actor: str | None = None
    ) -> SandboxRow:
        return await self._call(self._service.rewind, sandbox_id, to_version, reason=reason, actor=actor)

    async def fork(
        self,
        sandbox_id: str,
        at_version: int | None = None,
        conversation_id: str | None = None,
        *,
        reason: str = "fork",
        actor: str | None = None,
    ) -> SandboxRow:
        return await self._call(
            self._service.fork, sandbox_id, at_version, conversation_id, reason=reason, actor=actor
        )

    async def exec(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run a command; cancelling the awaiting task does not stop it (see the module docstring).

        ``on_stdout``/``on_stderr`` run on the event loop, never in a worker thread, so they may touch
        loop objects (a websocket, a queue); they may be coroutine functions, awaited chunk by chunk.
        Keep plain ones quick: they run on the loop. The rest is as :meth:`SandboxService.exec`.
        """
        if on_stdout is None and on_stderr is None:
            return await self._call_exec(
                self._service.exec,
                sandbox_id,
                command,
                timeout=timeout,
                env=env,
                cwd=cwd,
                wait=wait,
                max_output_bytes=max_output_bytes,
                check=check,
            )
        stream = self.exec_stream(
            sandbox_id,
            command,
            timeout=timeout,
            env=env,
            cwd=cwd,
            wait=wait,
            max_output_bytes=max_output_bytes,
            check=check,
        )
        return await _deliver(stream, on_stdout, on_stderr)

    def exec_stream(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> AsyncExecStream:
        """``async for stream, chunk in service.exec_stream(id, cmd): ...``, then ``.result``.

        The command starts with the first iteration, in the exec pool; at most a few chunks wait for a
        slow consumer (the command's output is held back, not buffered). Leaving the loop early stops
        the delivery; the command runs on until it exits or times out.
        """
        return self._stream(
            functools.partial(
                self._service.exec,
                sandbox_id,
                command,
                timeout=timeout,
                env=env,
                cwd=cwd,
                wait=wait,
                max_output_bytes=max_output_bytes,
                check=check,
            )
        )

    def _stream(self, exec_: Callable[..., ExecResult]) -> AsyncExecStream:
        def run(on_stdout: OutputCallback, on_stderr: OutputCallback) -> ExecResult:
            return exec_(on_stdout=on_stdout, on_stderr=on_stderr)

        return AsyncExecStream(run, lambda fn: self._submit_to(self._exec_executor, fn))

    async def write_file(self, sandbox_id: str, path: str, data: bytes) -> None:
        await self._call(self._service.write_file, sandbox_id, path, data)

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        return await self._call(self._service.read_file, sandbox_id, path)

    async def write_files(self, sandbox_id: str, files: Mapping[str, bytes]) -> None:
        await self._call(self._service.write_files, sandbox_id, files)

    async def remove(self, sandbox_id: str, path: str) -> None:
        await self._call(self._service.remove, sandbox_id, path)

    async def list_dir(self, sandbox_id: str, path: str = ".") -> builtins.list[FileEntry]:
        return await self._call(self._service.list_dir, sandbox_id, path)

    async def exists(self, sandbox_id: str, path: str) -> bool:
        return await self._call(self._service.exists, sandbox_id, path)

    async def upload_dir(self, sandbox_id: str, local_dir: str, remote_dir: str) -> TransferReport:
        """Runs in a worker thread like every call; a directory of any size holds a few MiB there."""
        return await self._call(self._service.upload_dir, sandbox_id, local_dir, remote_dir)

    async def download_dir(self, sandbox_id: str, remote_dir: str, local_dir: str) -> TransferReport:
        return await self._call(self._service.download_dir, sandbox_id, remote_dir, local_dir)

    # -------------------------------------------------------------------------------------- timers

    async def start(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        survive_suspend: bool = False,
    ) -> AsyncProcess:
        """See :meth:`SandboxService.start`."""
        started = await self._call(
            self._service.start,
            sandbox_id,
            command,
            env=env,
            cwd=cwd,
            wait=wait,
            survive_suspend=survive_suspend,
        )
        return AsyncProcess(self, sandbox_id, started.info)

    async def processes(self, sandbox_id: str) -> builtins.list[ProcessInfo]:
        return await self._call(self._service.processes, sandbox_id)

    async def process(self, sandbox_id: str, pid: str) -> AsyncProcess:
        found = await self._call(self._service.process, sandbox_id, pid)
        return AsyncProcess(self, sandbox_id, found.info)

    async def process_logs(self, sandbox_id: str, pid: str) -> ProcessLogs:
        return await self._call(self._service.process_logs, sandbox_id, pid)

    async def wait_process(self, sandbox_id: str, pid: str, timeout: float = DEFAULT_WAIT_S) -> int:
        # As long as an exec may: on the exec pool, so waiting never holds up a turn's start or suspend.
        return await self._call_exec(self._service.wait_process, sandbox_id, pid, timeout)

    async def kill_process(self, sandbox_id: str, pid: str) -> None:
        await self._call(self._service.kill_process, sandbox_id, pid)

    async def url(self, sandbox_id: str, port: int) -> str:
        return await self._call(self._service.url, sandbox_id, port)

    async def preview(self, sandbox_id: str, port: int) -> Preview:
        return await self._call(self._service.preview, sandbox_id, port)

    async def fire_due(self, now: datetime | None = None, *, limit: int = 1000) -> SweepReport:
        return await self._call(self._service.fire_due, now, limit=limit)

    async def reconcile(self, now: datetime | None = None) -> SweepReport:
        return await self._call(self._service.reconcile, now)

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        return await self._call(self._service.sweep, now)

    async def recover(
        self, sandbox_id: str, *, reason: str = RECOVER_REASON, actor: str | None = None
    ) -> Recovery:
        """Re-drive one stuck or failed sandbox now (``SandboxService.recover``)."""
        return await self._call(self._service.recover, sandbox_id, reason=reason, actor=actor)

    async def maintain_pools(self) -> builtins.list[str]:
        return await self._call(self._service.maintain_pools)

    # --------------------------------------------------------------------------------------- turns

    def turn(
        self,
        conversation_id: str,
        kind: str,
        *,
        keep_warm: bool = False,
        actor: str | None = None,
        credentials: Credentials | None = None,
    ) -> AsyncTurn:
        """``async with service.turn(...) as sbx``: create or resume, yield the handle, suspend on exit."""
        return AsyncTurn(
            self, conversation_id, kind, keep_warm=keep_warm, actor=actor, credentials=credentials
        )


class AsyncTurn:
    """One turn as an async context manager, driving the sync turn's enter and exit from worker threads.

    Single use, like the sync turn it wraps.
    """

    def __init__(
        self,
        service: AsyncSandboxService,
        conversation_id: str,
        kind: str,
        *,
        keep_warm: bool = False,
        actor: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self._service = service
        # Creating the generator-based context manager runs none of its body: it is safe on the loop.
        self._cm = service.sync.turn(
            conversation_id, kind, keep_warm=keep_warm, actor=actor, credentials=credentials
        )
        # Set as the turn starts ending; worker threads read it, hence an Event.
        self._ending = threading.Event()

    async def __aenter__(self) -> AsyncTurnHandle:
        entering = self._service._submit(self._cm.__enter__)
        if not await _settle(entering):
            return AsyncTurnHandle(self._service, entering.result(), self._ending)
        self._ending.set()
        # Cancelled while the enter ran on. If it opened the turn, nobody else would ever close it: the
        # sandbox would stay running, turn open, until the idle timer.
        if _failure(entering) is None and not entering.cancelled():
            cancel = asyncio.CancelledError()
            leaving = self._service._submit(self._cm.__exit__, type(cancel), cancel, None)
            await _settle(leaving)
            if (error := _failure(leaving)) is not None:
                log.warning("ending the turn whose start was cancelled failed: %s", error)
        raise asyncio.CancelledError

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._ending.set()
        # The sync exit sees the body's exception exactly as a `with` block would hand it over.
        leaving = self._service._submit(self._cm.__exit__, exc_type, exc, tb)
        if not await _settle(leaving):
            return leaving.result()
        # The task was cancelled while the sandbox was being suspended: the suspend has finished (or
        # failed, and its lease lets the sweep finish it); the cancellation wins over its outcome.
        if (error := _failure(leaving)) is not None:
            log.warning("ending the turn failed while its task was being cancelled: %s", error)
        raise asyncio.CancelledError


class AsyncTurnHandle:
    """The sandbox of an open turn: ``await sbx.exec(...)``, ``await sbx.write_file(...)``, ..."""

    __slots__ = ("_ending", "_handle", "_service")

    def __init__(self, service: AsyncSandboxService, handle: TurnHandle, ending: threading.Event) -> None:
        self._service = service
        self._handle = handle
        self._ending = ending

    def _open(self, fn: Callable[P, T]) -> Callable[P, T]:
        """``fn``, refused in its worker thread if the turn has started ending by the time it runs there.

        A call queued before the turn ended would otherwise find the sandbox suspended and resume it.
        """

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            if self._ending.is_set():
                raise RuntimeError(f"the turn {self.turn_id} on sandbox {self.id} has ended")
            return fn(*args, **kwargs)

        return call

    @property
    def id(self) -> str:
        return self._handle.id

    @property
    def kind(self) -> str:
        return self._handle.kind

    @property
    def turn_id(self) -> str:
        return self._handle.turn_id

    @property
    def sync(self) -> TurnHandle:
        return self._handle

    async def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run a command (a string runs under ``bash -lc``); cancellation: see the module docstring.
        Callbacks run on the loop (plain or coroutine functions): see :meth:`AsyncSandboxService.exec`."""
        if on_stdout is None and on_stderr is None:
            return await self._service._call_exec(
                self._open(self._handle.exec),
                command,
                timeout=timeout,
                env=env,
                cwd=cwd,
                max_output_bytes=max_output_bytes,
                check=check,
            )
        stream = self.exec_stream(
            command, timeout=timeout, env=env, cwd=cwd, max_output_bytes=max_output_bytes, check=check
        )
        return await _deliver(stream, on_stdout, on_stderr)

    def exec_stream(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> AsyncExecStream:
        """``async for stream, chunk in sbx.exec_stream(cmd): ...``; see AsyncSandboxService.exec_stream."""
        return self._service._stream(
            functools.partial(
                self._open(self._handle.exec),
                command,
                timeout=timeout,
                env=env,
                cwd=cwd,
                max_output_bytes=max_output_bytes,
                check=check,
            )
        )

    async def write_file(self, path: str, data: bytes | str) -> None:
        await self._service._call(self._open(self._handle.write_file), path, data)

    async def read_file(self, path: str) -> bytes:
        return await self._service._call(self._open(self._handle.read_file), path)

    async def write_files(self, files: Mapping[str, bytes | str]) -> None:
        await self._service._call(self._open(self._handle.write_files), dict(files))

    async def remove(self, path: str) -> None:
        await self._service._call(self._open(self._handle.remove), path)

    async def list(self, path: str = ".") -> builtins.list[FileEntry]:
        return await self._service._call(self._open(self._handle.list), path)

    async def exists(self, path: str) -> bool:
        return await self._service._call(self._open(self._handle.exists), path)

    async def upload_dir(self, local_dir: str | os.PathLike[str], remote_dir: str) -> TransferReport:
        return await self._service._call(self._open(self._handle.upload_dir), local_dir, remote_dir)

    async def download_dir(self, remote_dir: str, local_dir: str | os.PathLike[str]) -> TransferReport:
        return await self._service._call(self._open(self._handle.download_dir), remote_dir, local_dir)

    @property
    def stopped_processes(self) -> tuple[ProcessInfo, ...]:
        """See :attr:`TurnHandle.stopped_processes`."""
        return self._handle.stopped_processes

    async def start(
        self,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        survive_suspend: bool = False,
    ) -> AsyncProcess:
        started = await self._service._call(
            self._open(self._handle.start), command, env=env, cwd=cwd, survive_suspend=survive_suspend
        )
        return AsyncProcess(self._service, self.id, started.info)

    async def processes(self) -> builtins.list[ProcessInfo]:
        return await self._service._call(self._open(self._handle.processes))

    async def url(self, port: int) -> str:
        return await self._service._call(self._open(self._handle.url), port)

    def __repr__(self) -> str:
        return f"AsyncTurnHandle(id={self.id!r}, kind={self.kind!r}, turn_id={self.turn_id!r})"


class AsyncProcess:
    """A background process, awaitable: ``await proc.logs()``, ``.wait()``, ``.kill()``."""

    __slots__ = ("_service", "info", "sandbox_id")

    def __init__(self, service: AsyncSandboxService, sandbox_id: str, info: ProcessInfo) -> None:
        self._service = service
        self.sandbox_id = sandbox_id
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    async def logs(self) -> ProcessLogs:
        return await self._service.process_logs(self.sandbox_id, self.id)

    async def wait(self, timeout: float = DEFAULT_WAIT_S) -> int:
        return await self._service.wait_process(self.sandbox_id, self.id, timeout)

    async def kill(self) -> None:
        await self._service.kill_process(self.sandbox_id, self.id)

    def __repr__(self) -> str:
        return f"AsyncProcess(id={self.id!r}, sandbox_id={self.sandbox_id!r})"
