"""Usage recorded with the suspend or destroy that ends a run (core/usage.py), on the fake provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox_lifecycle.core import feed
from sandbox_lifecycle.core import usage as metering
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.core.usage import Usage
from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.codec import decode, encode
from sandbox_lifecycle.events.records import RecordedEvent
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))
STARTED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class MeteredProvider(FakeProvider):
    """The fake provider with a meter: each run's usage is what ``runs`` holds for its ref."""

    def __init__(self) -> None:
        super().__init__()
        self.measured: list[tuple[str, str]] = []
        self.next: Usage | None = Usage(
            since=STARTED,
            cpu_seconds=1.5,
            memory_peak_bytes=52_000_000,
            egress_bytes_in=1000,
            egress_bytes_out=200,
            model_requests=3,
            model_input_tokens=30,
            model_output_tokens=12,
            model_statuses={"200": 2, "429": 1},
        )
        self.meter_fails = False

    def usage(self, sandbox_id: str, ref: str) -> Usage | None:
        self.measured.append((sandbox_id, ref))
        if self.meter_fails:
            raise RuntimeError("engine went away")
        return self.next


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, Usage]] = []

    def usage(self, *, kind: str | None, usage: Usage) -> None:
        self.seen.append((kind, usage))

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def make(provider: FakeProvider) -> SandboxService:
    return SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=Clock(), capacity=Capacity())


def types_of(service: SandboxService, sid: str) -> list[str]:
    return [e.type for e in service.history(sid)]


def test_a_suspend_records_the_runs_usage_after_its_outcome_in_the_same_append() -> None:
    provider = MeteredProvider()
    service = make(provider)
    sid = service.create("data-app").id
    ref = service.get(sid).provider_ref
    service.suspend(sid)
    history = service.history(sid)
    assert [e.type for e in history][-3:] == ["SuspendRequested", "Suspended", "UsageRecorded"]
    assert provider.measured == [(sid, ref)]
    usage = history[-1]
    assert usage.reason == history[-2].reason and usage.actor == history[-2].actor
    assert usage.occurred_at == history[-2].occurred_at
    assert usage.data == {
        "since": STARTED.isoformat(),
        "cpu_seconds": 1.5,
        "memory_peak_bytes": 52_000_000,
        "egress_bytes_in": 1000,
        "egress_bytes_out": 200,
        "model_requests": 3,
        "model_input_tokens": 30,
        "model_output_tokens": 12,
        "model_statuses": {"200": 2, "429": 1},
    }
    # The fold passes it by: the sandbox is suspended at the version of the usage event.
    assert service.get(sid).state == "suspended" and service.get(sid).version == history[-1].version


def test_a_destroy_of_a_running_sandbox_records_usage_and_of_a_suspended_one_does_not() -> None:
    provider = MeteredProvider()
    service = make(provider)
    live = service.create("data-app").id
    service.destroy(live)
    assert types_of(service, live)[-2:] == ["Destroyed", "UsageRecorded"]
    parked = service.create("data-app").id
    service.suspend(parked)
    provider.measured.clear()
    service.destroy(parked)
    assert types_of(service, parked)[-1] == "Destroyed"
    assert provider.measured == []  # nothing ran since the suspend measured it


@pytest.mark.parametrize("answer", [None, Usage(), "not usage"])
def test_nothing_measured_records_no_event(answer: Any) -> None:
    provider = MeteredProvider()
    provider.next = answer
    service = make(provider)
    sid = service.create("data-app").id
    service.suspend(sid)
    assert types_of(service, sid)[-1] == "Suspended"


def test_a_failing_meter_never_stops_the_suspend(caplog: pytest.LogCaptureFixture) -> None:
    provider = MeteredProvider()
    provider.meter_fails = True
    service = make(provider)
    sid = service.create("data-app").id
    service.suspend(sid)
    assert service.get(sid).state == "suspended" and types_of(service, sid)[-1] == "Suspended"
    assert f"could not measure the usage of sandbox {sid}: RuntimeError: engine went away" in caplog.text


def test_usage_is_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        Usage(None, 1.5)  # type: ignore[misc]


def test_a_provider_without_a_meter_records_no_usage() -> None:
    service = make(FakeProvider())
    sid = service.create("data-app").id
    service.suspend(sid)
    service.resume(sid)
    service.destroy(sid)
    assert "UsageRecorded" not in types_of(service, sid)


def test_the_observer_is_told_the_kind_and_usage() -> None:
    provider = MeteredProvider()
    service = make(provider)
    recorder = Recorder()
    service.attach_observer(recorder)  # type: ignore[arg-type]
    sid = service.create("data-app").id
    service.suspend(sid)
    assert recorder.seen == [("data-app", provider.next)]


def test_unknown_numbers_stay_none_and_partial_usage_is_recorded() -> None:
    provider = MeteredProvider()
    provider.next = Usage(cpu_seconds=0.0)
    service = make(provider)
    sid = service.create("data-app").id
    service.suspend(sid)
    data = service.history(sid)[-1].data
    assert data["cpu_seconds"] == 0.0
    assert all(data[name] is None for name in metering.MEASURES if name != "cpu_seconds")
    assert data["since"] is None


def test_measured_means_any_number_known() -> None:
    assert not Usage().measured
    assert not Usage(since=STARTED).measured
    for name in metering.MEASURES:
        assert Usage(**{name: 0 if name != "model_statuses" else {}}).measured, name


def test_as_event_copies_the_statuses() -> None:
    statuses = {"200": 1}
    event = Usage(model_statuses=statuses).as_event(at=STARTED, actor="a", reason="r")
    statuses["200"] = 5
    assert event.model_statuses == {"200": 1}
    assert (event.at, event.actor, event.reason) == (STARTED, "a", "r")


def test_measure_asks_only_with_an_instance() -> None:
    provider = MeteredProvider()
    assert metering.measure(provider, "s1", None) is None and provider.measured == []
    assert metering.measure(object(), "s1", "ref") is None
    assert metering.measure(provider, "s1", "ref") == provider.next


class Versions:
    def __init__(self, answer: Any, fail: bool = False) -> None:
        self.answer, self.fail = answer, fail

    def image_version(self, kind: str) -> Any:
        if self.fail:
            raise OSError("no engine")
        return self.answer


def test_image_version_is_a_nonempty_string_or_none(caplog: pytest.LogCaptureFixture) -> None:
    assert metering.image_version(Versions("sha256:ab"), "k") == "sha256:ab"
    assert metering.image_version(Versions(""), "k") is None
    assert metering.image_version(Versions(3), "k") is None
    assert metering.image_version(Versions("x", fail=True), "k") is None
    assert "could not read the image version of kind k: OSError: no engine" in caplog.text
    assert metering.image_version(object(), "k") is None


def _record(event: ev.Event, schema_version: int | None = None) -> RecordedEvent:
    new = encode(event)
    return RecordedEvent(
        position=1,
        stream_id="s",
        version=1,
        type=new.type,
        data=new.data,
        metadata=new.metadata,
        occurred_at=new.occurred_at,
        schema_version=new.schema_version if schema_version is None else schema_version,
    )


def test_the_usage_event_survives_the_codec_and_old_pooled_events_decode_with_no_image() -> None:
    event = Usage(since=STARTED, cpu_seconds=2, model_statuses={"200": 1}).as_event(
        at=STARTED, actor="a", reason="r"
    )
    assert decode(_record(event)) == event
    old = _record(ev.Pooled(at=STARTED, actor="warm_pool", reason="warm_pool"))
    old.data.pop("image")
    assert decode(old) == ev.Pooled(at=STARTED, actor="warm_pool", reason="warm_pool", image=None)


def test_the_feed_and_so_the_relay_carry_the_usage() -> None:
    provider = MeteredProvider()
    service = make(provider)
    sid = service.create("data-app").id
    service.suspend(sid)
    (posted,) = [feed.event_json(e) for e in service.events(sandbox_id=sid) if e.type == "UsageRecorded"]
    assert posted["stream_id"] == sid and posted["reason"] == "user"
    assert posted["data"]["cpu_seconds"] == 1.5 and posted["data"]["model_statuses"] == {"200": 2, "429": 1}
