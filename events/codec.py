"""JSON codec for the event types, with upcasting of old schema versions.

Actor and reason travel in the record's metadata (with correlation/causation ids), the moment in
``occurred_at`` and the remaining fields in ``data``. Decoding never skips: an unknown type or a
malformed payload raises EventDecodeError naming the stream, version and type.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox_lifecycle.events.records import JSON, CorruptStream, NewEvent, RecordedEvent
from sandbox_lifecycle.events.types import EVENT_TYPES, Event

_ENVELOPE_FIELDS = frozenset({"at", "actor", "reason"})

Upcaster = Callable[[JSON], JSON]

# (type, from schema version) -> function producing the payload of schema version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("ActivityRecorded", 1): lambda data: {**data, "count": 1},
}


class EventDecodeError(CorruptStream):
    def __init__(self, record: RecordedEvent, detail: str) -> None:
        self.record = record
        self.type = record.type
        super().__init__(record.stream_id, record.version, detail)
        # The message names the event too, not only where it sits.
        self.args = (
            f"cannot decode event {record.type!r} (schema v{record.schema_version}) at version "
            f"{record.version} of stream {record.stream_id!r}: {detail}",
        )

    def __reduce__(self) -> tuple[type[EventDecodeError], tuple[RecordedEvent, str]]:  # type: ignore[override]
        # Rebuilds decode in worker processes and raise there: the error must survive the pickle
        # trip back (by default it would be rebuilt from its message alone, which __init__ refuses).
        return (type(self), (self.record, self.detail))


def _allowed_types(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if typing.get_origin(hint) is not None else (hint,)
    # A parametrized container (list[dict[str, Any]]) is checked as its bare type (list).
    return tuple(type(None) if a is None else (typing.get_origin(a) or a) for a in args)


def encode(event: Event, **metadata: str) -> NewEvent:
    data: JSON = {}
    plan = _plan_of(type(event))
    dt_fields = plan.datetime_fields
    for name in plan.payload_fields:
        value = getattr(event, name)
        data[name] = value.isoformat() if name in dt_fields and value is not None else value
    meta: JSON = {"actor": event.actor, "reason": event.reason, **metadata}
    return NewEvent(
        type=event.TYPE,
        data=data,
        occurred_at=event.at,
        schema_version=event.SCHEMA_VERSION,
        metadata=meta,
    )


def upcast(type_name: str, schema_version: int, data: JSON, target: int) -> JSON:
    version = schema_version
    while version < target:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise KeyError(f"no upcaster from schema v{version}")
        data = step(data)
        version += 1
    return data


class _Plan(typing.NamedTuple):
    """What encoding and decoding one event type need, looked up once per record (by type name)."""

    cls: type[Event]
    schema_version: int
    # field -> the Python types its value may have
    field_types: dict[str, tuple[type, ...]]
    datetime_fields: frozenset[str]
    # the fields ``data`` holds: every field but the envelope's
    payload_fields: tuple[str, ...]


# Filled on first use per type: reading the annotations of every event type (typing.get_type_hints)
# at import was a large share of a short command's start-up, and a command meets a few types only.
# Decoding a million events then reads each type's annotations once.
_PLANS: dict[str, _Plan] = {}


def _plan_of(cls: type[Event]) -> _Plan:
    """The plan of an event type of EVENT_TYPES (KeyError for any other class)."""
    plan = _PLANS.get(cls.TYPE)
    if plan is not None and plan.cls is cls:
        return plan
    if EVENT_TYPES.get(cls.TYPE) is not cls:
        raise KeyError(cls)
    hints = typing.get_type_hints(cls)
    field_types = {f.name: _allowed_types(hints[f.name]) for f in dataclasses.fields(cls)}
    # Two threads meeting a type first both build the same plan; either one is kept.
    plan = _PLANS[cls.TYPE] = _Plan(
        cls,
        cls.SCHEMA_VERSION,
        field_types,
        frozenset(name for name, allowed in field_types.items() if datetime in allowed),
        tuple(name for name in field_types if name not in _ENVELOPE_FIELDS),
    )
    return plan


def decode(record: RecordedEvent) -> Event:
    plan = _PLANS.get(record.type)
    if plan is None:
        cls = EVENT_TYPES.get(record.type)
        if cls is None:
            raise EventDecodeError(record, "unknown event type (written by a newer release?)")
        plan = _plan_of(cls)
    data = record.data
    if record.schema_version != plan.schema_version:
        # Checked only off the hot path: SQLite columns hold whatever was written into them.
        if type(record.schema_version) is not int:
            raise EventDecodeError(record, f"schema version {record.schema_version!r} is not an integer")
        if record.schema_version > plan.schema_version:
            raise EventDecodeError(
                record,
                f"schema v{record.schema_version} is newer than this release knows (v{plan.schema_version})",
            )
        try:
            data = upcast(record.type, record.schema_version, dict(data), plan.schema_version)
        except KeyError as exc:
            raise EventDecodeError(record, str(exc)) from exc
    meta = record.metadata
    try:
        # The envelope wins over payload keys of the same name (encode never writes them).
        kwargs: dict[str, Any] = {
            **data,
            "at": record.occurred_at,
            "actor": meta["actor"],
            "reason": meta["reason"],
        }
        for key in plan.datetime_fields:
            value = kwargs.get(key)
            if type(value) is str:
                kwargs[key] = datetime.fromisoformat(value)
        event = plan.cls(**kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise EventDecodeError(record, f"malformed payload ({type(exc).__name__}: {exc})") from exc
    # The constructor accepted exactly the declared fields (missing ones take their declared, well
    # typed defaults), so checking the given values checks the event; cheaper than reading it back.
    field_types = plan.field_types
    for name, value in kwargs.items():
        if type(value) not in field_types[name]:
            _check_type(record, name, value, field_types[name])
    return event


def _check_type(record: RecordedEvent, name: str, value: object, allowed: tuple[type, ...]) -> None:
    """Reject a value that does not have its field's declared type (a str where an int belongs).

    Subclasses pass (e.g. an aware datetime subclass), except bool for an int: JSON true is not 1.
    """
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        expected = " | ".join(t.__name__ for t in allowed)
        raise EventDecodeError(record, f"field {name!r} should be {expected}, got {type(value).__name__}")
