"""Fakes at the port boundary, for pure domain and service tests.

The real store and providers pass the same contract suites elsewhere; these only let the service be
driven fast and deterministically.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandbox_lifecycle.core.errors import ConcurrencyError, ExecTimeout, ProviderError, ProviderLost
from sandbox_lifecycle.core.ports import ExecResult, ProviderInstance, SnapshotInfo
from sandbox_lifecycle.events.records import (
    AppendResult,
    Deadline,
    NewEvent,
    Projection,
    RecordedEvent,
    SandboxRow,
    StoreError,
)


class InMemoryEventStore:
    """The EventStore port in memory. It runs the same contract suite as the real stores
    (tests/store/test_contract.py), so the service suite that drives it tests a faithful double."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[RecordedEvent] = []
        self.streams: dict[str, list[RecordedEvent]] = {}
        self.rows: dict[str, SandboxRow] = {}
        self.deadlines: dict[tuple[str, str], Deadline] = {}
        self.keys: dict[tuple[str, str], AppendResult] = {}
        self.fail_next_append: Exception | None = None

    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        projection: Projection | None = None,
    ) -> AppendResult:
        # The real stores refuse these before touching the database.
        if not events:
            raise ValueError("append needs at least one event")
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, not {expected_version}")
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
            for i, (e, at) in enumerate(zip(events, times, strict=True), start=1):
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
    row = projection.row
    for d in projection.deadlines:
        if d.sandbox_id != row.id:
            raise ValueError(f"deadline of {d.sandbox_id!r} in the projection of {row.id!r}")
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
    files: dict[str, bytes] = field(default_factory=dict)
    running: bool = True


class FakeProvider:
    """An in-memory provider with Docker-like semantics: suspend copies files to a snapshot dict."""

    name = "fake"

    def __init__(self) -> None:
        self.instances: dict[str, FakeInstance] = {}
        self.snapshots: dict[str, dict[str, bytes]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, Exception] = {}

    def _call(self, op: str, sid: str) -> None:
        self.calls.append((op, sid))
        exc = self.fail.pop(op, None)
        if exc is not None:
            raise exc

    def create(self, sandbox_id: str, kind: str) -> str:
        self._call("create", sandbox_id)
        self.instances.setdefault(sandbox_id, FakeInstance(sandbox_id, kind))
        return f"ref-{sandbox_id}"

    def _inst(self, ref: str) -> FakeInstance:
        inst = self.instances.get(ref.removeprefix("ref-"))
        if inst is None:
            raise ProviderLost(f"no instance {ref}")
        return inst

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        inst = self._inst(ref)
        self._call("exec", inst.sandbox_id)
        if command and command[0] == "sleep" and float(command[1]) > timeout:
            raise ExecTimeout(" ".join(command), timeout)
        if command and command[0] == "cat":
            data = inst.files.get(command[1])
            if data is None:
                return ExecResult(1, b"", f"cat: {command[1]}: No such file or directory\n".encode())
            return ExecResult(0, data, b"")
        return ExecResult(0, " ".join(command).encode(), b"")

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        self._inst(ref).files[path] = data

    def read_file(self, ref: str, path: str) -> bytes:
        try:
            return self._inst(ref).files[path]
        except KeyError:
            raise ProviderError(f"no file {path}") from None

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        self._call("suspend", sandbox_id)
        inst = self.instances.get(sandbox_id)
        if inst is None:
            if snapshot_key in self.snapshots:
                return SnapshotInfo(snapshot_key, "sha", len(self.snapshots[snapshot_key]))
            raise ProviderLost(f"sandbox {sandbox_id} and its snapshot are gone")
        self.snapshots[snapshot_key] = dict(inst.files)
        del self.instances[sandbox_id]
        return SnapshotInfo(snapshot_key, "sha", len(inst.files))

    def resume(self, sandbox_id: str, kind: str, snapshot: SnapshotInfo) -> str:
        self._call("resume", sandbox_id)
        files = self.snapshots.get(snapshot.key)
        if files is None:
            raise ProviderLost(f"snapshot {snapshot.key} is gone")
        self.instances[sandbox_id] = FakeInstance(sandbox_id, kind, dict(files))
        return f"ref-{sandbox_id}"

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        self._call("destroy", sandbox_id)
        self.instances.pop(sandbox_id, None)

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        self._call("delete_snapshot", snapshot.key)
        self.snapshots.pop(snapshot.key, None)

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        return snapshot.key in self.snapshots

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        inst = self.instances.get(sandbox_id)
        return ProviderInstance(sandbox_id, f"ref-{sandbox_id}", inst.kind, "running") if inst else None

    def list_instances(self) -> list[ProviderInstance]:
        return [
            ProviderInstance(i.sandbox_id, f"ref-{i.sandbox_id}", i.kind, "running")
            for i in self.instances.values()
        ]

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        return [
            (key.split("/")[1], SnapshotInfo(key, "sha", len(files))) for key, files in self.snapshots.items()
        ]


class Clock:
    """A settable clock for deterministic timer tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


class DirProvider:
    """A provider whose state lives in a directory, so several processes share it (multi-replica tests).

    An instance is ``<root>/instances/<id>/``; suspend renames it to ``<root>/snapshots/<key>`` (atomic);
    every call is appended to ``<root>/calls.log`` as one line, which is atomic for short writes.
    """

    name = "dir"

    def __init__(self, root: str | os.PathLike[str], *, delay: float = 0.0) -> None:
        self.root = Path(root)
        self.delay = delay
        (self.root / "instances").mkdir(parents=True, exist_ok=True)
        (self.root / "snapshots").mkdir(parents=True, exist_ok=True)

    def _log(self, op: str, sid: str) -> None:
        with open(self.root / "calls.log", "a") as f:
            f.write(f"{os.getpid()} {op} {sid}\n")
        if self.delay:
            time.sleep(self.delay)

    def calls(self) -> list[tuple[str, str]]:
        path = self.root / "calls.log"
        if not path.exists():
            return []
        return [tuple(line.split()[1:3]) for line in path.read_text().splitlines()]  # type: ignore[misc]

    def _dir(self, sid: str) -> Path:
        return self.root / "instances" / sid

    def create(self, sandbox_id: str, kind: str) -> str:
        self._log("create", sandbox_id)
        self._dir(sandbox_id).mkdir(exist_ok=True)
        return sandbox_id

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        if not self._dir(ref).exists():
            raise ProviderError(f"no instance {ref}")
        return ExecResult(0, " ".join(command).encode(), b"")

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        (self._dir(ref) / path.replace("/", "_")).write_bytes(data)

    def read_file(self, ref: str, path: str) -> bytes:
        return (self._dir(ref) / path.replace("/", "_")).read_bytes()

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        self._log("suspend", sandbox_id)
        target = self.root / "snapshots" / snapshot_key.replace("/", "_")
        src = self._dir(sandbox_id)
        if src.exists():
            src.rename(target)
        elif not target.exists():
            raise ProviderLost(f"sandbox {sandbox_id} and its snapshot are gone")
        return SnapshotInfo(snapshot_key, None, None)

    def resume(self, sandbox_id: str, kind: str, snapshot: SnapshotInfo) -> str:
        self._log("resume", sandbox_id)
        src = self.root / "snapshots" / snapshot.key.replace("/", "_")
        if not src.exists():
            raise ProviderLost(f"snapshot {snapshot.key} is gone")
        shutil.copytree(src, self._dir(sandbox_id), dirs_exist_ok=True)
        return sandbox_id

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        self._log("destroy", sandbox_id)
        shutil.rmtree(self._dir(sandbox_id), ignore_errors=True)

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        self._log("delete_snapshot", snapshot.key)
        shutil.rmtree(self.root / "snapshots" / snapshot.key.replace("/", "_"), ignore_errors=True)

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        return (self.root / "snapshots" / snapshot.key.replace("/", "_")).exists()

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        return (
            ProviderInstance(sandbox_id, sandbox_id, None, "running")
            if self._dir(sandbox_id).exists()
            else None
        )

    def list_instances(self) -> list[ProviderInstance]:
        return [
            ProviderInstance(p.name, p.name, None, "running") for p in (self.root / "instances").iterdir()
        ]

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        out = []
        for p in (self.root / "snapshots").iterdir():
            key = p.name.replace("_", "/")
            out.append((key.split("/")[1], SnapshotInfo(key, None, None)))
        return out
