"""Fakes at the port boundary, for pure domain and service tests.

The real store and providers pass the same contract suites elsewhere; these only let the service be
driven fast and deterministically.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import posixpath
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sandbox_lifecycle.adapters.egress.credentials import credential_host
from sandbox_lifecycle.adapters.egress.policy import check_allow
from sandbox_lifecycle.adapters.providers.tree import TransferCounter, extract_stream, pack_dir
from sandbox_lifecycle.core.errors import ConcurrencyError, ForeignSandbox, ProviderLost, SnapshotNotFound
from sandbox_lifecycle.core.kinds import HOME, kind_spec
from sandbox_lifecycle.core.ports import (
    ExecResult,
    FileEntry,
    OutputCallback,
    ProviderInstance,
    SnapshotInfo,
    TransferReport,
)
from sandbox_lifecycle.core.streaming import OutputCollector
from sandbox_lifecycle.events import chain
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
    StoreError,
)
from sandbox_lifecycle.events.store.base import (
    capacity_refusal,
    check_append,
    check_projection,
    lease_refusal,
)
from tests.support.fake_processes import FakeProcesses

# What every kind of the fake may reach: hosts of the reserved .test domain only.
FAKE_ALLOW = ("api.service.test", "*.pkgs.test")


class InMemoryEventStore:
    """The EventStore port in memory. It runs the same contract suite as the real stores
    (tests/**/test_contract.py), so the service suite that drives it tests a faithful double."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[RecordedEvent] = []
        self.streams: dict[str, list[RecordedEvent]] = {}
        self.rows: dict[str, SandboxRow] = {}
        self.deadlines: dict[tuple[str, str], Deadline] = {}
        self.keys: dict[tuple[str, str], AppendResult] = {}
        self.fail_next_append: Exception | None = None
        self.hashes: dict[tuple[str, int], str] = {}
        # The log's chain (events/chain.py log_link): log hash by position, and the head row.
        self.log_hashes: dict[int, str] = {}
        # The idempotency key by position (the first event of its append), which the log hash covers.
        self.event_keys: dict[int, str] = {}
        self.head: tuple[int, str] = (0, "")
        # lease id -> (sandbox id, holder, expires at)
        self.leases: dict[str, tuple[str, str, datetime]] = {}

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
        # The real stores' own argument checks, so the double refuses exactly what they refuse.
        check_append(events, expected_version, projection)
        times = [_utc(e.occurred_at) for e in events]
        if projection is not None:
            projection = _normalised(projection)
        with self._lock:
            if self.fail_next_append is not None:
                exc, self.fail_next_append = self.fail_next_append, None
                raise exc
            if idempotency_key is not None and (stream_id, idempotency_key) in self.keys:
                return replace(self.keys[(stream_id, idempotency_key)], duplicate=True)
            stream = self.streams.get(stream_id, [])
            if len(stream) != expected_version:
                raise ConcurrencyError(stream_id, expected_version, f"it is at version {len(stream)}")
            if projection is not None:
                self._check_live(projection, stream_id, expected_version)
            self._check_capacity(stream_id, capacity)
            if unleased_at is not None:
                at = _utc(unleased_at)
                held = sum(1 for sid, _, exp in self.leases.values() if sid == stream_id and exp > at)
                if (leased := lease_refusal(stream_id, held)) is not None:
                    raise leased
            previous = self.hashes.get((stream_id, expected_version))
            for i, h in enumerate(chain.hashes(previous, stream_id, expected_version, events), start=1):
                self.hashes[(stream_id, expected_version + i)] = h
            for i, (e, at) in enumerate(zip(events, times, strict=True), start=1):
                position = len(self.events) + 1
                stream_hash = self.hashes[(stream_id, expected_version + i)]
                key = idempotency_key if i == 1 else None
                if key is not None:
                    self.event_keys[position] = key
                self.head = (position, chain.log_link(self.head[1] or None, position, stream_hash, key))
                self.log_hashes[position] = self.head[1]
                rec = RecordedEvent(
                    len(self.events) + 1,
                    stream_id,
                    expected_version + i,
                    e.type,
                    e.schema_version,
                    _json_copy(e.data),
                    _json_copy(e.metadata),
                    at,
                )
                self.events.append(rec)
                stream.append(rec)
            self.streams[stream_id] = stream
            if projection is not None:
                self._write(projection)
            result = AppendResult(stream_id, len(stream), len(self.events))
            if idempotency_key is not None:
                self.keys[(stream_id, idempotency_key)] = result
            return result

    def take_lease(
        self, lease_id: str, sandbox_id: str, holder: str, now: datetime, expires_at: datetime
    ) -> None:
        now, expires_at = _utc(now), _utc(expires_at)
        with self._lock:
            self.leases = {k: v for k, v in self.leases.items() if v[2] > now}
            if lease_id in self.leases:
                raise StoreError(f"lease {lease_id!r} exists already")
            self.leases[lease_id] = (sandbox_id, holder, expires_at)

    def renew_lease(self, lease_id: str, expires_at: datetime) -> bool:
        with self._lock:
            if lease_id not in self.leases:
                return False
            sid, holder, _ = self.leases[lease_id]
            self.leases[lease_id] = (sid, holder, _utc(expires_at))
            return True

    def release_lease(self, lease_id: str) -> None:
        with self._lock:
            self.leases.pop(lease_id, None)

    def leased_sandboxes(self, now: datetime) -> set[str]:
        now = _utc(now)
        with self._lock:
            return {sid for sid, _, exp in self.leases.values() if exp > now}

    def _check_capacity(self, stream_id: str, capacity: Sequence[CapacityLimit]) -> None:
        """The real stores' count under their append lock: other sandboxes in the limit's states."""
        for limit in capacity:
            others = sum(
                1
                for row in self.rows.values()
                if row.id != stream_id
                and (
                    row.state in limit.states
                    or (row.state in limit.states_with_ref and row.provider_ref is not None)
                )
                and (limit.kind is None or row.kind == limit.kind)
            )
            if (refused := capacity_refusal(stream_id, limit, others)) is not None:
                raise refused

    def _check_live(self, projection: Projection, stream_id: str, expected_version: int) -> None:
        """The unique index of the real stores: one live sandbox per (conversation, kind)."""
        new = projection.row
        if new.conversation_id is None or new.state == "expired":
            return
        for row in self.rows.values():
            if (
                row.id != new.id
                and row.state != "expired"
                and row.conversation_id == new.conversation_id
                and row.kind == new.kind
            ):
                raise ConcurrencyError(
                    stream_id,
                    expected_version,
                    f"conversation {new.conversation_id!r} already has a live {new.kind!r} sandbox",
                )

    def _write(self, projection: Projection) -> None:
        self.rows[projection.row.id] = projection.row
        for key in [k for k in self.deadlines if k[0] == projection.row.id]:
            del self.deadlines[key]
        for d in projection.deadlines:
            self.deadlines[(d.sandbox_id, d.kind)] = d

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return [e for e in self.streams.get(stream_id, []) if e.version > after_version]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self.events[after_position : after_position + limit]

    def read_streams(
        self, after: tuple[str, int] = ("", 0), before: str | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        events = sorted(self.events, key=lambda e: (e.stream_id, e.version))
        return [
            e for e in events if (e.stream_id, e.version) > after and (before is None or e.stream_id < before)
        ][:limit]

    def read_chain(self, after: tuple[Any, Any] = ("", 0), limit: int = 1000) -> list[ChainedEvent]:
        return [
            ChainedEvent(e, self.hashes.get((e.stream_id, e.version)))
            for e in self.read_streams(after, limit=limit)
        ]

    def read_links(self, after_position: int | None = None, limit: int = 1000) -> list[LogLink]:
        start = after_position or 0
        return [
            LogLink(
                e.position,
                self.hashes.get((e.stream_id, e.version)),
                self.log_hashes.get(e.position),
                self.event_keys.get(e.position),
            )
            for e in self.events[start : start + limit]
        ]

    def log_head(self) -> tuple[int, str] | None:
        return self.head

    def split_streams(self, parts: int) -> list[str]:
        if parts < 1:
            raise ValueError(f"cannot split the streams into {parts} parts")
        ids = sorted(e.stream_id for e in self.events)
        return sorted({ids[len(ids) * i // parts] for i in range(1, parts) if ids} - {ids[0] if ids else ""})

    def get_sandbox(self, sandbox_id: str) -> SandboxRow | None:
        return self.rows.get(sandbox_id)

    def find_live(self, conversation_id: str, kind: str) -> SandboxRow | None:
        for row in self.rows.values():
            if row.conversation_id == conversation_id and row.kind == kind and row.state != "expired":
                return row
        return None

    def list_sandboxes(self, state: str | None = None) -> list[SandboxRow]:
        return sorted(
            (r for r in self.rows.values() if state is None or r.state == state),
            key=lambda r: (r.created_at, r.id),
        )

    def due_deadlines(self, now: datetime, limit: int = 1000) -> list[Deadline]:
        now = _utc(now)
        return [d for d in self.all_deadlines() if d.due_at <= now][:limit]

    def next_deadline(self) -> datetime | None:
        return min((d.due_at for d in self.deadlines.values()), default=None)

    def all_deadlines(self) -> list[Deadline]:
        return sorted(self.deadlines.values(), key=lambda d: (d.due_at, d.sandbox_id, d.kind))

    def write_projection(self, projection: Projection) -> None:
        projection = _normalised(projection)
        with self._lock:
            self._check_live(projection, projection.row.id, projection.row.version)
            self._write(projection)

    def replace_all_projections(self, projections: Iterable[Projection]) -> None:
        with self._lock:
            rows, deadlines = self.rows, self.deadlines
            self.rows, self.deadlines = {}, {}
            try:
                for p in projections:
                    p = _normalised(p)
                    self._check_live(p, p.row.id, p.row.version)
                    self._write(p)
            except ConcurrencyError as exc:
                # The real stores roll the whole replacement back, with a StoreError.
                self.rows, self.deadlines = rows, deadlines
                raise StoreError(f"database error: {exc}") from None

    def stream_ids(self) -> list[str]:
        return sorted(self.streams)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the event log stores aware UTC datetimes only")
    return value.astimezone(UTC)


def _json_copy(value: dict[str, object]) -> dict[str, object]:
    # What a real store hands back: a fresh object, with only what JSON can hold.
    copied: dict[str, object] = json.loads(json.dumps(value))
    return copied


def _normalised(projection: Projection) -> Projection:
    """The projection as a real store reads it back: datetimes in UTC; refused like a real one."""
    check_projection(projection)
    row = projection.row
    times = {
        name: _utc(value)
        for name in ("last_activity_at", "state_since", "created_at")
        if (value := getattr(row, name)) is not None
    }
    return Projection(
        replace(row, **times), tuple(replace(d, due_at=_utc(d.due_at)) for d in projection.deadlines)
    )


@dataclass
class FakeInstance:
    sandbox_id: str
    kind: str
    ref: str
    # Where the sandbox's home lives on the host; commands run in it for real.
    home: Path
    # The allow-list set on this instance (set_egress); None: its kind's, as any new instance starts.
    egress_allow: tuple[str, ...] | None = None


class FakeEngine:
    """What several FakeProviders share, as deployments share one Docker engine: one namespace of
    instance names (an instance of one deployment blocks the same name for the others) and one
    directory on the host."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-provider-")
            root = self._tmp.name
        self.root = Path(root)
        self.providers: list[FakeProvider] = []

    def owner(self, sandbox_id: str) -> FakeProvider | None:
        return next((p for p in self.providers if sandbox_id in p.instances), None)


class FakeProvider(FakeProcesses):
    """A provider with Docker's semantics on the host: an instance is a directory standing for the
    sandbox home, commands run in it as subprocesses (so exec output, exit codes, env, cwd and timeouts
    are real), suspend copies the kind's workspace paths to a snapshot directory and drops the instance.

    It passes the same contract suite as the Docker and E2B providers (tests/**/test_contract.py),
    so the service suite that runs on it does not test a drifting double. Test knobs: ``calls`` (what was
    called, in order), ``fail`` (the next call of an operation raises this), and ``instances`` /
    ``snapshots``, which a test may change behind the provider's back.
    """

    name = "fake"

    def __init__(self, engine: FakeEngine | None = None, *, deployment: str = "default") -> None:
        self.engine = engine or FakeEngine()
        self.engine.providers.append(self)
        self.deployment = deployment
        self.instances: dict[str, FakeInstance] = {}
        # Snapshot key -> the directory holding the workspace it stored.
        self.snapshots: dict[str, Path] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, Exception] = {}
        # Sandbox id -> host -> the credential headers set_credentials kept.
        self.credentials: dict[str, dict[str, dict[str, str]]] = {}
        self._serial = itertools.count(1)
        # The in-memory bound of an exec's output per stream, as DockerLimits.max_output_bytes.
        self.max_output_bytes = 1024**2
        self._init_processes()

    def _call(self, op: str, sid: str) -> None:
        self.calls.append((op, sid))
        exc = self.fail.pop(op, None)
        if exc is not None:
            raise exc

    def _refuse_foreign(self, sandbox_id: str) -> None:
        owner = self.engine.owner(sandbox_id)
        if owner is not None and owner is not self:
            raise ForeignSandbox(sandbox_id, "instance", f"deployment {owner.deployment!r}")

    def _new(self, sandbox_id: str, kind: str) -> FakeInstance:
        ref = f"ref-{sandbox_id}-{next(self._serial)}"
        home = self.engine.root / "instances" / self.deployment / ref / HOME.lstrip("/")
        shutil.rmtree(home, ignore_errors=True)
        (home / Path(kind_spec(kind).workdir).relative_to(HOME)).mkdir(parents=True)
        inst = FakeInstance(sandbox_id, kind, ref, home)
        self.instances[sandbox_id] = inst
        return inst

    # ------------------------------------------------------------------------------------ lifecycle

    def create(self, sandbox_id: str, kind: str) -> str:
        kind_spec(kind)
        self._call("create", sandbox_id)
        self._refuse_foreign(sandbox_id)
        inst = self.instances.get(sandbox_id)
        return (inst or self._new(sandbox_id, kind)).ref

    def _inst(self, ref: str) -> FakeInstance:
        for provider in self.engine.providers:
            for inst in provider.instances.values():
                if inst.ref == ref:
                    if provider is not self:
                        owner = f"deployment {provider.deployment!r}"
                        raise ForeignSandbox(inst.sandbox_id, "instance", owner)
                    return inst
        raise ProviderLost(f"no instance {ref}")

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        self._call("suspend", sandbox_id)
        self._refuse_foreign(sandbox_id)
        inst = self.instances.get(sandbox_id)
        if inst is None:
            if snapshot_key in self.snapshots:
                return self._info(snapshot_key)
            raise ProviderLost(f"sandbox {sandbox_id} and its snapshot are gone")
        target = self._snapshot_dir(snapshot_key)
        shutil.rmtree(target, ignore_errors=True)
        spec = kind_spec(kind).workspace
        for include in spec.include:
            src = inst.home / include
            if src.exists():
                shutil.copytree(src, target / include, ignore=_excluded(src, spec.exclude))
        target.mkdir(parents=True, exist_ok=True)
        self.snapshots[snapshot_key] = target
        # Only once the workspace is stored is the compute released.
        self._drop(sandbox_id)
        return self._info(snapshot_key)

    def resume(
        self, sandbox_id: str, kind: str, snapshot: SnapshotInfo, allow: Sequence[str] | None = None
    ) -> str:
        self._call("resume", sandbox_id)
        self._refuse_foreign(sandbox_id)
        stored = self.snapshots.get(snapshot.key)
        if stored is None or not stored.is_dir():
            raise ProviderLost(f"snapshot {snapshot.key} is gone")
        self._drop(sandbox_id)  # a stale instance of an interrupted resume
        inst = self._new(sandbox_id, kind)
        inst.egress_allow = None if allow is None else tuple(allow)
        shutil.copytree(stored, inst.home, dirs_exist_ok=True)
        return inst.ref

    def check_egress(self, allow: Sequence[str]) -> tuple[str, ...]:
        return check_allow(allow)  # the Docker provider's check: the rules of the kinds' lists

    def set_egress(self, sandbox_id: str, ref: str, kind: str, allow: Sequence[str] | None) -> None:
        self._call("set_egress", sandbox_id)
        self._inst(ref).egress_allow = None if allow is None else tuple(allow)

    def check_credentials(self, kind: str, allow: Sequence[str] | None, host: str) -> str:
        return credential_host(FAKE_ALLOW if allow is None else allow, host)

    def set_credentials(self, sandbox_id: str, host: str, headers: Mapping[str, str]) -> None:
        """Kept per sandbox, as the Docker provider's state file keeps them (a destroy forgets them)."""
        self._call("set_credentials", sandbox_id)
        kept = self.credentials.setdefault(sandbox_id, {})
        if headers:
            kept[host] = dict(headers)
        else:
            kept.pop(host, None)

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        self._call("destroy", sandbox_id)
        self._refuse_foreign(sandbox_id)
        self._drop(sandbox_id)
        self.credentials.pop(sandbox_id, None)

    def _drop(self, sandbox_id: str) -> None:
        inst = self.instances.pop(sandbox_id, None)
        if inst is not None:
            self._stop_processes(inst.ref)
            shutil.rmtree(self.engine.root / "instances" / self.deployment / inst.ref, ignore_errors=True)

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        self._call("delete_snapshot", snapshot.key)
        stored = self.snapshots.pop(snapshot.key, None)
        if stored is not None:
            shutil.rmtree(stored, ignore_errors=True)

    def copy_snapshot(self, snapshot: SnapshotInfo, key: str) -> SnapshotInfo:
        self._call("copy_snapshot", snapshot.key)
        stored = self.snapshots.get(snapshot.key)
        if stored is None or not stored.is_dir():
            raise SnapshotNotFound(f"snapshot {snapshot.key} is gone")
        target = self._snapshot_dir(key)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(stored, target)
        self.snapshots[key] = target
        return self._info(key)

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        stored = self.snapshots.get(snapshot.key)
        return stored is not None and stored.is_dir()

    def _snapshot_dir(self, key: str) -> Path:
        return self.engine.root / "snapshots" / self.deployment / key

    def _info(self, key: str) -> SnapshotInfo:
        stored = self.snapshots[key]
        size = sum(p.stat().st_size for p in stored.rglob("*") if p.is_file()) if stored.is_dir() else 0
        return SnapshotInfo(key, None, size)

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        self._refuse_foreign(sandbox_id)
        inst = self.instances.get(sandbox_id)
        return ProviderInstance(sandbox_id, inst.ref, inst.kind, "running") if inst else None

    def list_instances(self) -> list[ProviderInstance]:
        return [ProviderInstance(i.sandbox_id, i.ref, i.kind, "running") for i in self.instances.values()]

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        return [(key.split("/")[1], SnapshotInfo(key, None, None)) for key in self.snapshots]

    # ------------------------------------------------------------------------------ exec and files

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
        inst = self._inst(ref)
        self._call("exec", inst.sandbox_id)
        workdir = self._host(inst, cwd or kind_spec(inst.kind).workdir, allow_home=True)
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(inst.home), **(env or {})}
        limit = self.max_output_bytes if max_output_bytes is None else max_output_bytes
        output = OutputCollector(limit, on_stdout, on_stderr)
        # Its own session, so a timeout kills everything the command started, as the real ones do.
        try:
            proc = subprocess.Popen(
                list(command),
                cwd=workdir,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            # What a shell in the sandbox answers for a command that is not there.
            output.add_stderr(f"{command[0]}: command not found\n".encode())
            return output.result(127)
        assert proc.stdout is not None and proc.stderr is not None
        # One reader per pipe hands each chunk on as it is written, as the real providers stream.
        readers = [
            threading.Thread(target=_pump, args=(proc.stdout, output.add_stdout), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, output.add_stderr), daemon=True),
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        try:
            proc.wait(timeout=timeout)
            # Like communicate(): done once the pipes close, which a background child may delay.
            for reader in readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            if any(r.is_alive() for r in readers):
                raise subprocess.TimeoutExpired(list(command), timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for reader in readers:
                reader.join(5)
            raise output.timed_out(" ".join(command), timeout) from None
        return output.result(proc.returncode)

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        target = self._host(self._inst(ref), path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def read_file(self, ref: str, path: str) -> bytes:
        return self._host(self._inst(ref), path).read_bytes()

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        inst = self._inst(ref)
        targets = {self._host(inst, path): data for path, data in files.items()}  # all checked first
        for target, data in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def remove(self, ref: str, path: str) -> None:
        target = self._host(self._inst(ref), path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()

    def list_dir(self, ref: str, path: str) -> list[FileEntry]:
        target = self._host(self._inst(ref), path, allow_home=True)
        if not os.path.lexists(target):
            raise FileNotFoundError(f"{path} does not exist in the sandbox")
        if not target.is_dir() or target.is_symlink():
            raise NotADirectoryError(f"{path} in the sandbox is not a directory")
        entries = []
        for child in target.iterdir():
            st = child.lstat()
            kind = (
                "symlink"
                if stat.S_ISLNK(st.st_mode)
                else "dir"
                if stat.S_ISDIR(st.st_mode)
                else "file"
                if stat.S_ISREG(st.st_mode)
                else "other"
            )
            entries.append(FileEntry(child.name, kind, st.st_size))
        return sorted(entries, key=lambda e: e.name)

    def exists(self, ref: str, path: str) -> bool:
        return os.path.lexists(self._host(self._inst(ref), path, allow_home=True))

    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport:
        # The real providers' own tar code both ways, so the fake's transfers follow the same rules.
        target = self._host(self._inst(ref), remote_dir, allow_home=True)
        counter = TransferCounter()
        chunks = pack_dir(local_dir, counter, owner=(os.getuid(), os.getgid()))
        extract_stream(chunks, str(target), top=None)
        return counter.report()

    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport:
        source = self._host(self._inst(ref), remote_dir, allow_home=True)
        if not os.path.lexists(source):
            raise FileNotFoundError(f"{remote_dir} does not exist in the sandbox")
        if not source.is_dir() or source.is_symlink():
            raise NotADirectoryError(f"{remote_dir} in the sandbox is not a directory")
        # What a sandbox's `tar -c` sends: everything, links and special files included; the extractor
        # is what keeps the backend safe.
        pipe = subprocess.Popen(["tar", "-c", "-f", "-", "-C", str(source), "."], stdout=subprocess.PIPE)
        assert pipe.stdout is not None
        try:
            return extract_stream(iter(lambda: pipe.stdout.read(1 << 20), b""), local_dir, top=".")
        finally:
            pipe.stdout.close()
            pipe.wait(timeout=60)

    def _host(self, inst: FakeInstance, path: str, *, allow_home: bool = False) -> Path:
        """The host path of a sandbox path (relative ones are relative to the kind's workdir)."""
        absolute = posixpath.normpath(posixpath.join(kind_spec(inst.kind).workdir, path))
        inside = absolute.startswith(HOME + "/") or (allow_home and absolute == HOME)
        if not inside:
            raise ValueError(f"path {path!r} is outside the sandbox home {HOME}")
        return inst.home / posixpath.relpath(absolute, HOME)


def _pump(pipe: IO[bytes], add: Callable[[bytes], None]) -> None:
    with pipe:
        # A raw read returns what is there as soon as there is some, not a full buffer.
        while chunk := os.read(pipe.fileno(), 65536):
            add(chunk)


def _excluded(src: Path, patterns: Sequence[str]) -> Callable[[str, list[str]], set[str]]:
    def ignore(directory: str, names: list[str]) -> set[str]:
        base = Path(directory)
        return {n for n in names if any((base / n).match(p.removeprefix("**/")) for p in patterns)}

    return ignore


class Clock:
    """A settable clock for deterministic timer tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now
