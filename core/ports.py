"""The ports core/ talks through. Adapters implement them; tests may fake them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from sandbox_lifecycle.events.records import (
    AppendResult,
    CapacityLimit,
    ChainedEvent,
    Deadline,
    LogLink,
    NewEvent,
    Projection,
    RecordedEvent,
    SandboxRow,
)
from sandbox_lifecycle.events.values import FieldValues, value_class


class EventStore(Protocol):
    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        projection: Projection | None = None,
        capacity: Sequence[CapacityLimit] = (),
        unleased_at: datetime | None = None,
    ) -> AppendResult:
        """Append atomically iff the stream is at ``expected_version`` (0 = new stream).

        Raises ConcurrencyError otherwise, or when the projection would give a conversation a
        second live sandbox of the same kind. Raises CapacityRefused when a ``capacity`` limit is
        full, counted in the append's own transaction (so it holds across processes), and
        SandboxLeased when ``unleased_at`` is given and the sandbox has a lease valid then.
        """
        ...

    def take_lease(
        self, lease_id: str, sandbox_id: str, holder: str, now: datetime, expires_at: datetime
    ) -> None:
        """Record a call in flight on the sandbox until ``expires_at`` (and drop leases expired at
        ``now``), serialised with appends: an append checking leases either sees it or commits first."""
        ...

    def renew_lease(self, lease_id: str, expires_at: datetime) -> bool:
        """Move the lease's expiry; False when it is gone (released, or purged once expired)."""
        ...

    def release_lease(self, lease_id: str) -> None:
        """Drop the lease; a missing one is success."""
        ...

    def leased_sandboxes(self, now: datetime) -> set[str]:
        """The sandboxes holding a lease valid at ``now``."""
        ...

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]: ...

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events in commit order; a tailing reader never misses a late-committing one."""
        ...

    def read_streams(
        self, after: tuple[str, int] = ("", 0), before: str | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Events ordered by (stream id, version), from just after the key ``after`` up to the stream
        ``before`` (excluded; None: to the end). Pass the last event's (stream_id, version) to page on.

        For folds that need each stream in order but not the global commit order (rebuilds): each
        stream comes whole and consecutively, and a range of stream ids is read without the others.
        Stream ids are ordered by the store (its collation), never compare them yourself.
        """
        ...

    def read_chain(self, after: tuple[Any, Any] = ("", 0), limit: int = 1000) -> list[ChainedEvent]:
        """Like ``read_streams`` (same order and paging) with each event's stored chain hash, and no
        error on a missing version nor on a row that cannot be read (its ``problem`` says why): what
        the audit verifier reads (core/audit.py). ``after`` is the last item's (stream id, version)."""
        ...

    def read_links(self, after_position: int | None = None, limit: int = 1000) -> list[LogLink]:
        """The log's chain in position order after ``after_position`` (None: from the first row,
        whatever its position): each event's position, stream hash, log hash and idempotency key
        (events/chain.py ``log_link``), for the audit verifier."""
        ...

    def log_head(self) -> tuple[int, str] | None:
        """The position and log hash of the log's last event, as the store's head row holds them
        ((0, "") for an empty log; None when the row is gone)."""
        ...

    def split_streams(self, parts: int) -> list[str]:
        """Up to ``parts - 1`` ascending stream ids cutting the streams into ranges holding about
        equal numbers of events: up to b1 (excluded), from b1 up to b2, ..., from bk to the end.

        Approximate (may sample), but the ranges always cover every stream exactly once.
        """
        ...

    def get_sandbox(self, sandbox_id: str) -> SandboxRow | None: ...

    def find_live(self, conversation_id: str, kind: str) -> SandboxRow | None:
        """The conversation's sandbox of that kind that is not expired, if any."""
        ...

    def list_sandboxes(self, state: str | None = None) -> list[SandboxRow]: ...

    def due_deadlines(self, now: datetime, limit: int = 1000) -> list[Deadline]:
        """Deadlines with ``due_at <= now``, oldest first."""
        ...

    def next_deadline(self) -> datetime | None: ...

    def all_deadlines(self) -> list[Deadline]: ...

    def write_projection(self, projection: Projection) -> None:
        """Rewrite one sandbox's projection without events (re-arming a stale timer)."""
        ...

    def stream_ids(self) -> list[str]: ...

    def replace_all_projections(self, projections: Iterable[Projection]) -> None:
        """Replace every read-model row and deadline in one transaction (``replay --rebuild``)."""
        ...


@value_class
class WorkspaceSpec(FieldValues):
    """What a snapshot of a kind holds: paths under ``root`` to include, glob patterns to exclude."""

    root: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()


@value_class
class SnapshotInfo(FieldValues):
    """Where a suspended workspace lives. For E2B the key is the paused E2B sandbox id."""

    key: str
    sha256: str | None
    # The stored object's size (what a fetch verifies).
    bytes: int | None
    # A checkpoint of pieces: the workspace's size, and the bytes of the pieces its suspend uploaded.
    workspace_bytes: int | None = None
    bytes_new: int | None = None


# Receives an exec's output as it arrives, one chunk of bytes at a time (see SandboxProvider.exec).
OutputCallback = Callable[[bytes], None]


@value_class
class ExecResult(FieldValues):
    """What a command printed, as the bytes it wrote: binary output survives; text is decoded at the edge."""

    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    truncated: bool = False

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")


@value_class
class FileEntry(FieldValues):
    """One entry of a sandbox directory listing. ``type`` is "file", "dir", "symlink" or "other" (a
    device, a FIFO); ``size`` is the entry's own size in bytes (a symlink's is its target's length)."""

    name: str
    type: str
    size: int


@value_class
class TransferReport(FieldValues):
    """What a directory transfer moved: regular files, their bytes, and the members it left out because
    they were unsafe to write (a link leaving the directory, a device, a name with ``..``), by name."""

    files: int
    bytes: int
    skipped: tuple[str, ...] = ()


@value_class
class ProviderInstance(FieldValues):
    """A live or paused provider sandbox carrying our label/metadata (used by the reconciler)."""

    sandbox_id: str
    ref: str
    kind: str | None
    status: str  # "running" | "paused" | "stopped"


# ------------------------------------------------------------------------ capabilities and processes


@value_class
class ProviderCapabilities(FieldValues):
    """What a provider can do, so the service refuses clearly (``Unsupported``) instead of failing deep
    inside a backend. ``isolation``: "container" (shares the host kernel), "gvisor" (a user-space kernel
    between the sandbox and the host's), "microvm", or "none" (a test double running on the host).
    ``pause_keeps_processes``: a suspend keeps background processes running across the resume (E2B's
    memory snapshot); otherwise they are stopped and recorded on the events. ``egress_allow_list``:
    outbound traffic is limited to the kind's allow-list. ``ports``: ``url`` works.
    ``checkpoints``: every suspend's snapshot stays restorable after a resume, and ``copy_snapshot`` works,
    so rewind and fork do (docs/checkpoints.md). ``egress_credentials``: ``set_credentials`` works, the
    egress point adds them to the sandbox's requests (docs/network.md)."""

    isolation: str
    pause_keeps_processes: bool
    egress_allow_list: bool
    ports: bool
    checkpoints: bool = False
    egress_credentials: bool = False


@value_class
class ProcessInfo(FieldValues):
    """A background process started with ``SandboxProvider.start``. ``id`` is the provider's handle for
    it (not an OS pid); ``exit_code`` is None while it runs (and for one killed without a status)."""

    id: str
    command: tuple[str, ...]
    cwd: str
    running: bool
    exit_code: int | None = None


class ProcessProvider(Protocol):
    """The background-process, port and activity calls of a provider (part of SandboxProvider)."""

    capabilities: ProviderCapabilities

    def start(
        self,
        ref: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ProcessInfo:
        """Start a command detached from the call: it runs on after this returns (and after the calling
        process dies), its output going to files in the sandbox that ``process_output`` reads."""
        ...

    def processes(self, ref: str) -> list[ProcessInfo]:
        """Every process ``start`` began in this instance, running or finished, oldest first."""
        ...

    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]:
        """(stdout, stderr) the process wrote so far (the last ``max_output_bytes`` of each).
        ProcessNotFound for an unknown id."""
        ...

    def wait_process(self, ref: str, pid: str, timeout: float) -> int:
        """The process's exit code once it ended; TimeoutError if it still runs after ``timeout`` s
        (it is not killed). A process killed by ``kill_process`` reports 137 (128 + SIGKILL)."""
        ...

    def kill_process(self, ref: str, pid: str) -> None:
        """SIGKILL the process and everything it started. Killing one that already ended is success."""
        ...

    def url(self, ref: str, port: int) -> str:
        """A URL (scheme://host[:port]) on which the backend's host reaches a server listening on
        ``port`` in the sandbox. Unsupported where the provider cannot reach ports."""
        ...

    def last_activity(self, ref: str) -> datetime | None:
        """The newest activity the provider saw that the log may not have recorded (a background
        process's output moving), or None when there is none."""
        ...


class SandboxProvider(ProcessProvider, Protocol):
    """What a provider must do. Two more methods are optional, looked up by name (core/usage.py), so a
    provider without them works as before: ``usage(sandbox_id, ref) -> Usage | None`` (what the running
    instance used since it started; read before a suspend or destroy) and ``image_version(kind) -> str |
    None`` (the version of the kind's image or template a create uses now; fresh pools, core/pool.py)."""

    name: str

    def create(self, sandbox_id: str, kind: str) -> str:
        """Start a sandbox named from ``sandbox_id`` and return its provider ref.

        Idempotent: if one with our label for this id exists, it is returned, not duplicated.
        """
        ...

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        """Run a command; raises ExecTimeout after killing it when it outlives ``timeout``.

        ``on_stdout``/``on_stderr`` get every chunk of output as it arrives, in order per stream, from a
        thread of the provider's (keep them quick: a slow callback slows the command's output). The
        result keeps at most ``max_output_bytes`` of each stream (None: the provider's configured
        bound) and sets ``truncated`` when it cut some; the callbacks got all of it. The ExecTimeout
        carries the (bounded) output printed before the kill. A callback that raises gets no further
        chunks and its error is raised once the command has ended. (Use
        ``sandbox_lifecycle.core.streaming.OutputCollector``.)
        """
        ...

    def write_file(self, ref: str, path: str, data: bytes) -> None: ...

    def read_file(self, ref: str, path: str) -> bytes: ...

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        """Write several whole files at once (parents are created, owned by the sandbox user)."""
        ...

    def remove(self, ref: str, path: str) -> None:
        """Remove a file, a symlink (not its target) or a directory with everything in it.

        A path that does not exist is success: the caller wanted it gone, and a retry must not fail."""
        ...

    def list_dir(self, ref: str, path: str) -> list[FileEntry]:
        """The entries directly inside a directory, sorted by name (``list_dir``: a method named
        ``list`` would shadow the builtin in every provider class). FileNotFoundError when the path
        does not exist, NotADirectoryError when it is not a directory."""
        ...

    def exists(self, ref: str, path: str) -> bool:
        """Whether anything (a file, a directory, a dangling symlink) is at the path."""
        ...

    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport:
        """Copy a local directory's contents into ``remote_dir`` (created if missing) as a streamed
        tar, in bounded memory. Everything written is the sandbox user's; setuid bits, devices and
        symlinks leaving ``local_dir`` are not copied (they are reported as skipped)."""
        ...

    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport:
        """Copy a sandbox directory's contents into ``local_dir`` (created if missing) as a streamed
        tar, in bounded memory. The sandbox is untrusted: nothing is written outside ``local_dir`` or
        through a link, and links leaving it, devices, FIFOs and setuid bits are left out (skipped)."""
        ...

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        """Persist the workspace, then release the compute. Never releases before the snapshot is stored."""
        ...

    def resume(
        self, sandbox_id: str, kind: str, snapshot: SnapshotInfo, allow: Sequence[str] | None = None
    ) -> str:
        """Bring the workspace back; returns the new provider ref. ProviderLost if it cannot. ``allow`` is
        the sandbox's allow-list from the log (checked by ``check_egress``; None: the kind's): the new
        instance is under it from its start, never under a broader one until a later ``set_egress``."""
        ...

    def check_egress(self, allow: Sequence[str]) -> tuple[str, ...]:
        """``allow`` as a sandbox's allow-list would keep it (normalized), or ValueError naming the first
        refused entry: checked by the rules the kinds' allow-lists are parsed with, before anything is
        recorded."""
        ...

    def set_egress(self, sandbox_id: str, ref: str, kind: str, allow: Sequence[str] | None) -> None:
        """Put ``allow`` (checked by ``check_egress``; None: the kind's allow-list) in force for the live
        sandbox ``ref``: its new connections see it within a second. Idempotent."""
        ...

    def check_credentials(self, kind: str, allow: Sequence[str] | None, host: str) -> str:
        """``host`` as credentials for it are kept, or ValueError: it is not a host the sandbox's allow-list
        (``allow``; None: the kind's) names, or the provider has no egress point that adds headers."""
        ...

    def set_credentials(self, sandbox_id: str, host: str, headers: Mapping[str, str]) -> None:
        """Keep ``headers`` (checked; empty: remove) for the egress point to add to the sandbox's requests
        to ``host``, replacing the host's earlier ones, wherever the sandbox is (live or suspended).
        The values go where only the egress point reads them: never a log line, container config or the
        sandbox. Forgotten when the sandbox is destroyed. Idempotent."""
        ...

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        """Remove the compute. Idempotent: gone already is success."""
        ...

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        """Idempotent."""
        ...

    def copy_snapshot(self, snapshot: SnapshotInfo, key: str) -> SnapshotInfo:
        """Store a copy of ``snapshot`` under ``key`` (a fork's own), verified; SnapshotNotFound when it is
        gone. Unsupported where ``capabilities.checkpoints`` is False."""
        ...

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        """True when the snapshot exists (and, where the provider can, verifies)."""
        ...

    def instance(self, sandbox_id: str) -> ProviderInstance | None: ...

    def list_instances(self) -> list[ProviderInstance]: ...

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        """(sandbox id, snapshot) for every snapshot this provider keeps outside a live instance."""
        ...


class SnapshotStore(Protocol):
    """Object storage for Docker workspace archives (S3 or a local directory)."""

    def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
        """Store the stream under ``key`` without buffering it whole; returns sha256 and size."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A streaming reader; raises SnapshotNotFound."""
        ...

    def stat(self, key: str) -> int | None:
        """Size in bytes, or None when absent."""
        ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def remove_stale_uploads(self, older_than: datetime, prefix: str = "") -> list[str]:
        """Remove what interrupted puts under ``prefix`` left behind (partial files, incomplete multipart
        uploads) that were started before ``older_than``; returns a description of each one removed.

        A put killed mid-way (kill -9, a lost machine) cannot clean up after itself, and its leftovers are
        invisible to ``keys``. Only pass a time older than any put still running (the lease).
        """
        ...
