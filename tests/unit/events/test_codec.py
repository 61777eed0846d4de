"""The event codec: round trips, upcasting of old schema versions, and loud failures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.codec import EventDecodeError, decode, encode
from sandbox_lifecycle.events.records import NewEvent, RecordedEvent
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import FakeProvider

T = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def record(type_: str, data: dict[str, object], schema_version: int = 1, version: int = 3) -> RecordedEvent:
    return RecordedEvent(
        7, "sbx-1", version, type_, schema_version, data, {"actor": "api", "reason": "user"}, T
    )


@given(
    count=st.integers(1, 10**6),
    reason=st.text(max_size=20),
    actor=st.text(max_size=20),
)
def test_round_trip(count: int, reason: str, actor: str) -> None:
    event = ev.ActivityRecorded(at=T, actor=actor, reason=reason, count=count)
    new = encode(event, correlation_id="c1")
    assert new.metadata["correlation_id"] == "c1"
    assert decode(RecordedEvent(1, "s", 1, new.type, new.schema_version, new.data, new.metadata, T)) == event


def test_v1_activity_is_upcast_to_v2() -> None:
    # v1 of ActivityRecorded had no count: one stored before v2 reads as a single activity.
    event = decode(record("ActivityRecorded", {}, schema_version=1))
    assert event == ev.ActivityRecorded(at=T, actor="api", reason="user", count=1)


def test_v1_event_in_a_real_log_replays(clean_sqlite_url: str) -> None:
    store = open_store(clean_sqlite_url)
    service = SandboxService(store, FakeProvider())
    row = service.create("data-app")
    store.append(
        row.id,
        row.version,
        [
            NewEvent(
                "ActivityRecorded", {}, T, schema_version=1, metadata={"actor": "old", "reason": "activity"}
            )
        ],
    )
    assert service.history(row.id)[-1].type == "ActivityRecorded"
    assert service.load(row.id).last_activity_at == T


@pytest.mark.parametrize(
    ("rec", "message"),
    [
        (record("Teleported", {}), "unknown event type"),
        (record("Created", {}), "malformed payload"),
        (record("Created", {"provider_ref": 42}), "field 'provider_ref' should be str, got int"),
        (record("Suspended", {"snapshot_key": "k", "bytes": "12"}), "field 'bytes' should be int | NoneType"),
        (record("Created", {"provider_ref": "r", "surprise": 1}), "malformed payload"),
        (record("IdleTimeoutElapsed", {"idle_since": "yesterday", "timeout_ms": 5}), "malformed payload"),
        (record("ActivityRecorded", {"count": 1}, schema_version=9), "newer than this release knows"),
    ],
)
def test_bad_records_fail_loudly_naming_stream_version_and_type(rec: RecordedEvent, message: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode(rec)
    text = str(info.value)
    assert message in text
    assert "'sbx-1'" in text and "version 3" in text and rec.type in text


def test_suspend_events_written_before_running_processes_still_decode() -> None:
    # Events of earlier releases have no running_processes: they read as "not recorded".
    old = decode(record("SuspendRequested", {"snapshot_key": "snapshots/sbx-1/3.tar.zst"}))
    assert old == ev.SuspendRequested(
        at=T, actor="api", reason="user", snapshot_key="snapshots/sbx-1/3.tar.zst"
    )
    assert old.running_processes is None
    assert (
        decode(record("Suspended", {"snapshot_key": "k", "sha256": None, "bytes": 3})).running_processes
        is None
    )


def test_running_processes_round_trip_and_are_type_checked() -> None:
    procs = [{"id": "0190abc1234", "command": ["npm", "run", "dev"], "cwd": "/home/sandbox/app"}]
    event = ev.Suspended(at=T, actor="api", reason="turn_end", snapshot_key="k", running_processes=procs)
    new = encode(event)
    assert new.data["running_processes"] == procs
    assert decode(RecordedEvent(1, "s", 1, new.type, new.schema_version, new.data, new.metadata, T)) == event
    with pytest.raises(EventDecodeError, match="running_processes"):
        decode(record("Suspended", {"snapshot_key": "k", "running_processes": "npm run dev"}))
