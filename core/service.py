"""The application service: the public face of the one writer.

It sequences the commands (create, suspend, resume, destroy, a turn) and the data plane (exec, files,
background processes) on the kernel (``core/kernel.py``: load, append, drive a side effect), with its
helpers beside it: admission when the fleet is full (``core/admission.py``), the warm pools
(``core/pool.py``), the sweep (``core/recovery.py``) and calls on a live sandbox (``core/live.py``).
"""

from __future__ import annotations

import builtins
import logging
import os
import shlex
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sandbox_lifecycle.core import feed, inflight
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.admission import Admission
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.checkpoints import CheckpointCalls, Checkpoints
from sandbox_lifecycle.core.credentials import Credentials, EgressCalls, TurnCredentials
from sandbox_lifecycle.core.errors import (
    CommandFailed,
    ConcurrencyError,
    ProcessNotFound,
    SandboxBusy,
    SandboxNotFound,
    Unsupported,
)
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import FOREIGN, MAX_RACES, RECONCILER, Duplicate, Kernel, Shared
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.live import FILE_CALL_BEAT_S, LiveCalls
from sandbox_lifecycle.core.observe import Observer
from sandbox_lifecycle.core.pool import WarmPool
from sandbox_lifecycle.core.ports import (
    EventStore,
    ExecResult,
    FileEntry,
    OutputCallback,
    ProcessInfo,
    ProviderCapabilities,
    SandboxProvider,
    TransferReport,
)
from sandbox_lifecycle.core.preview import PreviewCalls
from sandbox_lifecycle.core.processes import DEFAULT_WAIT_S, Process, ProcessLogs, from_record
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.recovery import Sweeper, SweepReport
from sandbox_lifecycle.core.rescue import RecoverCalls
from sandbox_lifecycle.core.streaming import ExecStream, argv_of
from sandbox_lifecycle.events.records import RecordedEvent, SandboxRow
from sandbox_lifecycle.events.values import FieldValues, value_class

if TYPE_CHECKING:
    # Imported where they are used: a short command never reads a history or runs git.
    from sandbox_lifecycle.core.git import Git
    from sandbox_lifecycle.core.replay import HistoryEntry

__all__ = ["FOREIGN", "RECONCILER", "SandboxService", "SweepReport", "TurnHandle", "new_sandbox_id", "utcnow"]

log = logging.getLogger("sandbox_lifecycle")

T = TypeVar("T")

# The reason of the activity a heartbeat records (core/inflight.py), kept importable from here.
HEARTBEAT_REASON = inflight.HEARTBEAT_REASON
# A heartbeat outlives no call by more than this: past an exec's timeout the provider has killed it.
_HEARTBEAT_GRACE_S = 60.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_sandbox_id() -> str:
    return random_id()[:16]


class SandboxService(CheckpointCalls, EgressCalls, PreviewCalls, RecoverCalls):
    def __init__(
        self,
        store: EventStore,
        provider: SandboxProvider,
        *,
        policy: Policy | None = None,
        clock: Callable[[], datetime] = utcnow,
        actor: str = "api",
        sweep_workers: int = 8,
        busy_wait: timedelta | None = None,
        observer: Observer | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        policy = policy or Policy()
        self.kernel = Kernel(
            store, provider, policy=policy, clock=clock, actor=actor, capacity=capacity or Capacity()
        )
        if observer is not None:
            self.attach_observer(observer)
        self._sweeper = Sweeper(self.kernel, sweep_workers)
        self._admission = Admission(self.kernel)
        # How long a call waits for another caller's in-flight side effect (a resume, a create) before
        # it reports the sandbox busy; by default the lease, past which the sweep takes the effect over.
        waits = policy.lease if busy_wait is None else busy_wait
        self._calls = LiveCalls(self.kernel, self._admission, waits)
        self.pools = WarmPool(self.kernel, self)
        # Rewind, fork and the checkpoints' list (CheckpointCalls); a rewind suspends a live sandbox first.
        self._checkpoints = Checkpoints(self.kernel, lambda i, r, a: self.suspend(i, reason=r, actor=a))

    def attach_observer(self, observer: Observer) -> None:
        """Report to ``observer`` (metrics and the like, core/observe.py) from now on; every provider
        call is then timed for it. Called once, at start-up, before the service is shared."""
        self.kernel.attach_observer(observer)

    # --------------------------------------------------------------------------- the kernel's state

    # Plain attributes of the kernel, shared with every helper (a test may set the clock or the pools).
    store: Shared[EventStore] = Shared()
    provider: Shared[SandboxProvider] = Shared()
    policy: Shared[Policy] = Shared()
    actor: Shared[str] = Shared()
    observer: Shared[Observer] = Shared()
    clock: Shared[Callable[[], datetime]] = Shared()
    # SANDBOX_MAX_LIVE and the warm pools (core/capacity.py, core/pool.py).
    capacity: Shared[Capacity] = Shared()

    @property
    def busy_wait(self) -> timedelta:
        """How long a call waits for another caller's side effect before it reports the sandbox busy."""
        return self._calls.busy_wait

    @property
    def sweep_workers(self) -> int:
        return self._sweeper.workers

    @property
    def capabilities(self) -> ProviderCapabilities:
        """The provider's capabilities (a provider that declares none is assumed to have none)."""
        return self.kernel.capabilities

    def load(self, sandbox_id: str) -> sb.Sandbox:
        return self.kernel.load(sandbox_id)

    def drive(
        self,
        state: sb.Sandbox,
        cid: str,
        reason: str,
        at: datetime | None = None,
        *,
        actor: str | None = None,
        recovery: bool = False,
    ) -> sb.Sandbox:
        """Take a transitional state to its outcome (``Kernel.drive``, the one place that does)."""
        return self.kernel.drive(state, cid, reason, at, actor=actor, recovery=recovery)

    # ------------------------------------------------------------------------------------- queries

    def get(self, sandbox_id: str) -> SandboxRow:
        row = self.store.get_sandbox(sandbox_id)
        if row is None:
            raise SandboxNotFound(sandbox_id)
        return row

    def list(self, state: str | None = None) -> builtins.list[SandboxRow]:
        return self.store.list_sandboxes(state)

    def history(self, sandbox_id: str) -> builtins.list[HistoryEntry]:
        # why here: a short command never reads a history (tests/**/test_imports.py)
        from sandbox_lifecycle.core.replay import history

        records = self.store.read_stream(sandbox_id)
        if not records:
            raise SandboxNotFound(sandbox_id)
        return history(sandbox_id, records)

    def events(
        self,
        after_position: int = 0,
        follow: bool = False,
        *,
        sandbox_id: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[RecordedEvent]:
        """The log in commit order, from just after ``after_position`` (see core/feed.py). With
        ``follow`` it waits for new events until ``stop`` is set or the iterator is closed; each event's
        ``position`` is where to resume from."""
        return feed.tail(self.store, after_position, follow, stream_id=sandbox_id, stop=stop)

    # ------------------------------------------------------------------------------------ commands

    def create(
        self,
        kind: str,
        conversation_id: str | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str | None = None,
        reason: str = "user",
        admit: bool = True,
    ) -> SandboxRow:
        """Create a sandbox. When the fleet is full, an idle sandbox is suspended to make room, or the
        call waits for one (``SANDBOX_CAPACITY_WAIT_MS``), then raises CapacityExceeded; with
        ``admit=False`` (the warm pool) it raises the store's CapacityRefused at once instead."""
        kind_spec(kind)
        # A retried create with the same key lands on the same stream and is a no-op there: it returns
        # the first call's sandbox as it is now (creating, idle, suspended, expired...) and runs no side
        # effect, since the first call (or the sweep, past its lease) owns the one in flight.
        sid = self.sandbox_id_for_key(idempotency_key) if idempotency_key else new_sandbox_id()
        if idempotency_key and (existing := self.store.get_sandbox(sid)) is not None:
            return existing
        cid = random_id()
        who = actor or self.actor
        cmd = sb.Create(
            kind=kind, provider=self.provider.name, conversation_id=conversation_id, actor=who, reason=reason
        )

        def attempt() -> sb.Sandbox:
            return self.kernel.apply(
                sb.initial(sid), cmd, correlation_id=cid, idempotency_key=idempotency_key
            )

        try:
            state = self._admission.admit(kind, attempt, actor=who) if admit else attempt()
        except Duplicate:
            return self.get(sid)
        except ConcurrencyError:
            if idempotency_key and self.store.get_sandbox(sid) is not None:
                return self.get(sid)
            if conversation_id is not None:
                live = self.store.find_live(conversation_id, kind)
                if live is not None:
                    raise SandboxBusy(
                        live.id, live.state, f"conversation {conversation_id} already has it"
                    ) from None
            raise
        self.kernel.drive(state, cid, reason, actor=who)
        return self.get(sid)

    @staticmethod
    def sandbox_id_for_key(idempotency_key: str) -> str:
        """The sandbox id a create with this idempotency key gets (every retry lands on it)."""
        import hashlib  # why here: an exec or an ls hashes nothing of its own (tests/**/test_imports.py)

        return hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]

    def suspend(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        cid, who = random_id(), actor or self.actor
        _, state = self.kernel.run(
            sandbox_id,
            lambda s: sb.RequestSuspend(
                actor=who, reason=reason, running_processes=self.kernel.stopping_processes(s)
            ),
            cid,
        )
        self.kernel.drive(state, cid, reason, actor=who)
        return self.get(sandbox_id)

    def resume(self, sandbox_id: str, *, reason: str = "user", actor: str | None = None) -> SandboxRow:
        """Bring a suspended sandbox back. One that is already live is left as it is (success); one that
        another caller is resuming or creating is waited for (up to ``busy_wait``)."""
        self._calls.live(sandbox_id, reason=reason, actor=actor or self.actor)
        return self.get(sandbox_id)

    def destroy(
        self, sandbox_id: str, *, reason: str = "user", actor: str | None = None, version: int | None = None
    ) -> SandboxRow:
        """``version`` (the warm pool's): only the sandbox as it was seen at that version, with no call in
        flight on it; else ConcurrencyError or SandboxLeased, and nothing written (a claim wins)."""
        cid, who = random_id(), actor or self.actor
        state = self.load(sandbox_id)
        if version is not None and state.version != version:
            raise ConcurrencyError(sandbox_id, version, "it changed since it was seen")
        if state.status == lc.EXPIRED:
            return self.get(sandbox_id)
        if version is not None:
            state = self.kernel.apply(
                state, sb.Destroy(actor=who, reason=reason), correlation_id=cid, unleased=True
            )
        elif state.status != lc.DESTROYING:
            _, state = self.kernel.run(sandbox_id, lambda s: sb.Destroy(actor=who, reason=reason), cid)
        self.kernel.drive(state, cid, reason, actor=who)
        return self.get(sandbox_id)

    def touch(self, sandbox_id: str, *, actor: str | None = None, count: int = 1) -> SandboxRow:
        window = self.policy.activity_window
        self.kernel.run(sandbox_id, lambda s: sb.Touch(window=window, count=count, actor=actor or self.actor))
        return self.get(sandbox_id)

    # ----------------------------------------------------------------------------------- data plane

    def _on_live(
        self,
        sandbox_id: str,
        call: Callable[[str], T],
        wait: float | None = None,
        *,
        busy_for: float = FILE_CALL_BEAT_S,
    ) -> T:
        """``call(provider_ref)`` on the live sandbox, as a call in flight (see ``LiveCalls.call``)."""
        return self._calls.call(sandbox_id, call, wait, busy_for=busy_for)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between the activity records of a call in flight (core/inflight.py)."""
        return inflight.heartbeat_interval(self.kernel)

    def exec(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run ``command`` (an argv list, or a string run by ``bash -lc``), resuming the sandbox if it is
        suspended and waiting (up to ``wait`` seconds, default ``busy_wait``) for another caller's
        resume or create to finish. While it runs it counts as activity (the idle timer waits).

        ``on_stdout``/``on_stderr`` receive the output as it arrives, in ``bytes`` chunks, from a
        provider thread. The result keeps at most ``max_output_bytes`` per stream (default: the
        provider's bound, 1 MiB) with ``truncated`` set past it; the callbacks get everything. A timeout
        raises ExecTimeout carrying the output printed until the kill; ``check=True`` raises
        CommandFailed for a non-zero exit.
        """
        argv = argv_of(command)
        # Only the options asked for reach the provider: one written against the port before streaming
        # keeps working for callers who do not stream.
        stream: dict[str, Any] = {}
        if on_stdout is not None:
            stream["on_stdout"] = on_stdout
        if on_stderr is not None:
            stream["on_stderr"] = on_stderr
        if max_output_bytes is not None:
            if max_output_bytes < 0:
                raise ValueError(f"max_output_bytes must be >= 0, got {max_output_bytes!r}")
            stream["max_output_bytes"] = max_output_bytes
        result = self._on_live(
            sandbox_id,
            lambda ref: self.provider.exec(ref, argv, timeout=timeout, env=env, cwd=cwd, **stream),
            wait,
            busy_for=timeout + _HEARTBEAT_GRACE_S,
        )
        if check and result.exit_code != 0:
            raise CommandFailed(
                result.exit_code, result.stderr_bytes, command=shlex.join(argv), stdout=result.stdout_bytes
            )
        return result

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
    ) -> ExecStream:
        """``for stream, chunk in service.exec_stream(id, cmd): ...`` (``stream`` is "stdout" or
        "stderr"), then ``.result``; see :class:`~sandbox_lifecycle.core.streaming.ExecStream`."""
        return ExecStream(
            lambda out, err: self.exec(
                sandbox_id,
                command,
                timeout=timeout,
                env=env,
                cwd=cwd,
                wait=wait,
                on_stdout=out,
                on_stderr=err,
                max_output_bytes=max_output_bytes,
                check=check,
            )
        )

    def write_file(self, sandbox_id: str, path: str, data: bytes) -> None:
        self._on_live(sandbox_id, lambda ref: self.provider.write_file(ref, path, data))

    def read_file(self, sandbox_id: str, path: str) -> bytes:
        return self._on_live(sandbox_id, lambda ref: self.provider.read_file(ref, path))

    def write_files(self, sandbox_id: str, files: Mapping[str, bytes]) -> None:
        """Write several whole files in one provider call (paths relative to the kind's workdir)."""
        files = dict(files)  # a caller's mapping may change while a worker thread reads it
        self._on_live(sandbox_id, lambda ref: self.provider.write_files(ref, files))

    def remove(self, sandbox_id: str, path: str) -> None:
        """Remove a file or a directory with all it holds; a missing path is success."""
        self._on_live(sandbox_id, lambda ref: self.provider.remove(ref, path))

    def list_dir(self, sandbox_id: str, path: str = ".") -> builtins.list[FileEntry]:
        """The entries of a sandbox directory (``list`` is taken: it lists sandboxes)."""
        return self._on_live(sandbox_id, lambda ref: self.provider.list_dir(ref, path))

    def exists(self, sandbox_id: str, path: str) -> bool:
        return self._on_live(sandbox_id, lambda ref: self.provider.exists(ref, path))

    def upload_dir(self, sandbox_id: str, local_dir: str, remote_dir: str) -> TransferReport:
        """Copy a local directory's contents into the sandbox, streamed (see SandboxProvider.upload_dir)."""
        return self._on_live(sandbox_id, lambda ref: self.provider.upload_dir(ref, local_dir, remote_dir))

    def download_dir(self, sandbox_id: str, remote_dir: str, local_dir: str) -> TransferReport:
        """Copy a sandbox directory's contents into a local one, streamed; what is unsafe to write there
        (links leaving it, devices, setuid bits) is left out and named in the report."""
        return self._on_live(sandbox_id, lambda ref: self.provider.download_dir(ref, remote_dir, local_dir))

    # --------------------------------------------------------------------------------------- turns

    @contextmanager
    def turn(
        self,
        conversation_id: str,
        kind: str,
        *,
        keep_warm: bool = False,
        actor: str | None = None,
        credentials: Credentials | None = None,
    ) -> Iterator[TurnHandle]:
        """Create or resume the conversation's sandbox, yield it, suspend it on exit (also on error).
        ``credentials`` ({host: headers}): set_credentials for each host before the turn's code runs."""
        kind_spec(kind)
        turn_id = random_id()
        cid = turn_id
        who = actor or self.actor
        row = self.store.find_live(conversation_id, kind)
        sandbox_id = (
            row.id
            if row is not None
            else self.pools.claim(kind, conversation_id, actor=who, correlation_id=cid)
            or self.create(kind, conversation_id, actor=who, reason="turn_start").id
        )
        for _ in range(MAX_RACES):
            state = self.load(sandbox_id)
            if state.status in (lc.CREATING, lc.SUSPENDING, lc.RESUMING):
                # Between its create (or resume) and its turn the sandbox was idle for a moment, and a
                # caller short of capacity may have suspended it: wait that out, then resume it.
                state = self._calls.settled(sandbox_id)
            if state.status == lc.SUSPENDED:
                try:
                    state = self._calls.resume_admitted(state, who, "turn_start", cid)
                except ConcurrencyError:
                    continue
                state = self.kernel.drive(state, cid, "turn_start", actor=who)
            try:
                state = self.kernel.apply(state, sb.StartTurn(turn_id=turn_id, actor=who), correlation_id=cid)
                break
            except ConcurrencyError:
                continue
        else:
            raise SandboxBusy(sandbox_id, "contended", "too many concurrent turns")
        stopped = (
            ()
            if self.capabilities.pause_keeps_processes
            else tuple(map(from_record, state.stopped_processes))
        )
        try:
            self._turn_credentials(sandbox_id, credentials, who)
            yield TurnHandle(self, sandbox_id, kind, turn_id, stopped)
        finally:
            self._end_turn(sandbox_id, turn_id, keep_warm, who, cid)

    def _end_turn(self, sandbox_id: str, turn_id: str, keep_warm: bool, actor: str, cid: str) -> None:
        for _ in range(MAX_RACES):
            state = self.load(sandbox_id)
            if state.status != lc.RUNNING or state.turn_id != turn_id:
                # The idle timer or an operator already moved it on; nothing of ours to end.
                return
            try:
                stopping = None if keep_warm else self.kernel.stopping_processes(state)
                state = self.kernel.apply(
                    state,
                    sb.EndTurn(
                        turn_id=turn_id, suspend=not keep_warm, actor=actor, running_processes=stopping
                    ),
                    correlation_id=cid,
                )
                break
            except ConcurrencyError:
                continue
        else:
            return  # others keep writing to it; whatever they do, this turn's end is not theirs to drive
        self.kernel.drive(state, cid, "turn_end", actor=actor)

    # ------------------------------------------------------------------------ timers and the sweep

    def fire_due(self, now: datetime | None = None, *, limit: int = 1000) -> SweepReport:
        """Fire every deadline due at ``now``: idle → suspend, retention → GC, lease → recovery."""
        return self._sweeper.fire_due(now, limit=limit)

    def reconcile(self, now: datetime | None = None) -> SweepReport:
        """Re-drive stuck transitions, then remove provider resources no live sandbox owns."""
        return self._sweeper.reconcile(now)

    def sweep(self, now: datetime | None = None) -> SweepReport:
        report = self._sweeper.sweep(now)
        report.fired.extend(self.maintain_pools())
        return report

    def maintain_pools(self) -> builtins.list[str]:
        """Top each kind's warm pool up to its size while there is room; drain what exceeds it."""
        return self.pools.maintain()

    # ------------------------------------------------------------------- background processes and ports

    def start(
        self,
        sandbox_id: str,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        wait: float | None = None,
        survive_suspend: bool = False,
    ) -> Process:
        """Start a background process (an argv list, or a string run by ``bash -lc``) and return its
        handle at once. It runs on after this call and after this process. Its output counts as activity
        while it moves (see ``last_activity``). ``survive_suspend=True`` refuses (Unsupported) on a
        provider whose suspend stops processes (Docker): there, restart them from the turn's
        ``stopped_processes``."""
        if survive_suspend and not self.capabilities.pause_keeps_processes:
            raise Unsupported(
                self.provider.name,
                "background processes that survive a suspend",
                "a suspend stops them; the next turn's stopped_processes lists them to restart",
            )
        argv = argv_of(command)
        info = self._on_live(
            sandbox_id, lambda ref: self.provider.start(ref, argv, env=env, cwd=cwd), wait, busy_for=60.0
        )
        return Process(self, sandbox_id, info)

    def processes(self, sandbox_id: str) -> builtins.list[ProcessInfo]:
        """The background processes of the sandbox's current instance, running or ended, oldest first."""
        return self._on_live(sandbox_id, lambda ref: self.provider.processes(ref))

    def process(self, sandbox_id: str, pid: str) -> Process:
        """The handle of a background process by its id (ProcessNotFound when there is none)."""
        for info in self.processes(sandbox_id):
            if info.id == pid:
                return Process(self, sandbox_id, info)
        raise ProcessNotFound(sandbox_id, pid)

    def process_logs(self, sandbox_id: str, pid: str) -> ProcessLogs:
        out, err = self._on_process(sandbox_id, pid, lambda ref: self.provider.process_output(ref, pid))
        return ProcessLogs(out, err)

    def _on_process(self, sandbox_id: str, pid: str, call: Callable[[str], T], busy_for: float = 60.0) -> T:
        """``_on_live`` for a call about one process: ProcessNotFound names the sandbox, not the ref."""
        try:
            return self._on_live(sandbox_id, call, busy_for=busy_for)
        except ProcessNotFound:
            raise ProcessNotFound(sandbox_id, pid) from None

    def wait_process(self, sandbox_id: str, pid: str, timeout: float = DEFAULT_WAIT_S) -> int:
        """The process's exit code once it ends; TimeoutError when it still runs after ``timeout``."""
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        return self._on_process(
            sandbox_id,
            pid,
            lambda ref: self.provider.wait_process(ref, pid, timeout),
            busy_for=timeout + _HEARTBEAT_GRACE_S,
        )

    def kill_process(self, sandbox_id: str, pid: str) -> None:
        self._on_process(sandbox_id, pid, lambda ref: self.provider.kill_process(ref, pid))


@value_class
class TurnHandle(FieldValues, TurnCredentials):
    """The sandbox of the turn in progress, with the service's calls bound to it."""

    service: SandboxService
    id: str
    kind: str
    turn_id: str
    # The background processes the last suspend stopped (on a provider whose suspend stops them), so the
    # turn can start them again: ``for p in sbx.stopped_processes: sbx.start(list(p.command), cwd=p.cwd)``.
    stopped_processes: tuple[ProcessInfo, ...] = ()

    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecResult:
        """See :meth:`SandboxService.exec`."""
        return self.service.exec(
            self.id,
            command,
            timeout=timeout,
            env=env,
            cwd=cwd,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            max_output_bytes=max_output_bytes,
            check=check,
        )

    def exec_stream(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_output_bytes: int | None = None,
        check: bool = False,
    ) -> ExecStream:
        """``for stream, chunk in sbx.exec_stream(cmd): ...``; see :meth:`SandboxService.exec_stream`."""
        return self.service.exec_stream(
            self.id,
            command,
            timeout=timeout,
            env=env,
            cwd=cwd,
            max_output_bytes=max_output_bytes,
            check=check,
        )

    def write_file(self, path: str, data: bytes | str) -> None:
        self.service.write_file(self.id, path, data.encode() if isinstance(data, str) else data)

    def read_file(self, path: str) -> bytes:
        return self.service.read_file(self.id, path)

    def write_files(self, files: Mapping[str, bytes | str]) -> None:
        self.service.write_files(
            self.id, {p: d.encode() if isinstance(d, str) else d for p, d in files.items()}
        )

    def remove(self, path: str) -> None:
        self.service.remove(self.id, path)

    def exists(self, path: str) -> bool:
        return self.service.exists(self.id, path)

    def upload_dir(self, local_dir: str | os.PathLike[str], remote_dir: str) -> TransferReport:
        return self.service.upload_dir(self.id, os.fspath(local_dir), remote_dir)

    def download_dir(self, remote_dir: str, local_dir: str | os.PathLike[str]) -> TransferReport:
        return self.service.download_dir(self.id, remote_dir, os.fspath(local_dir))

    @property
    def git(self) -> Git:
        """Git in the kind's workdir; ``sbx.git.at(path)`` for another repository."""
        # why here: a short command never runs git (tests/**/test_imports.py)
        from sandbox_lifecycle.core.git import Git

        return Git(self)

    def list(self, path: str = ".") -> builtins.list[FileEntry]:
        """The entries of a sandbox directory (name, type, size), sorted by name."""
        return self.service.list_dir(self.id, path)

    def start(
        self,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        survive_suspend: bool = False,
    ) -> Process:
        """See :meth:`SandboxService.start`."""
        return self.service.start(self.id, command, env=env, cwd=cwd, survive_suspend=survive_suspend)

    def processes(self) -> builtins.list[ProcessInfo]:
        return self.service.processes(self.id)

    def url(self, port: int) -> str:
        """See :meth:`SandboxService.url`."""
        return self.service.url(self.id, port)
