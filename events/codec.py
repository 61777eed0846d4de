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

from events.records import JSON, NewEvent, RecordedEvent, StoreError
from events.types import EVENT_TYPES, Event

_ENVELOPE_FIELDS = frozenset({"at", "actor", "reason"})

Upcaster = Callable[[JSON], JSON]

# (type, from schema version) -> function producing the payload of schema version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("ActivityRecorded", 1): lambda data: {**data, "count": 1},
}


class EventDecodeError(StoreError):
    def __init__(self, record: RecordedEvent, detail: str) -> None:
        self.stream_id = record.stream_id
        self.version = record.version
        self.type = record.type
        super().__init__(
            f"cannot decode event {record.type!r} (schema v{record.schema_version}) at version "
            f"{record.version} of stream {record.stream_id!r}: {detail}"
        )


def _allowed_types(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if typing.get_origin(hint) is not None else (hint,)
    return tuple(type(None) if a is None else a for a in args)


# Per event class: field -> the Python types its value may have. Computed once, since decoding a
# million events must not re-read annotations each time.
_FIELD_TYPES: dict[type[Event], dict[str, tuple[type, ...]]] = {
    cls: {f.name: _allowed_types(typing.get_type_hints(cls)[f.name]) for f in dataclasses.fields(cls)}
    for cls in EVENT_TYPES.values()
}
_DATETIME_FIELDS: dict[type[Event], frozenset[str]] = {
    cls: frozenset(name for name, allowed in fields.items() if datetime in allowed)
    for cls, fields in _FIELD_TYPES.items()
}


def encode(event: Event, **metadata: str) -> NewEvent:
    data: JSON = {}
    dt_fields = _DATETIME_FIELDS[type(event)]
    for f in dataclasses.fields(event):
        if f.name in _ENVELOPE_FIELDS:
            continue
        value = getattr(event, f.name)
        data[f.name] = value.isoformat() if f.name in dt_fields and value is not None else value
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


def decode(record: RecordedEvent) -> Event:
    cls = EVENT_TYPES.get(record.type)
    if cls is None:
        raise EventDecodeError(record, "unknown event type (written by a newer release?)")
    if record.schema_version != cls.SCHEMA_VERSION:
        if record.schema_version > cls.SCHEMA_VERSION:
            raise EventDecodeError(
                record,
                f"schema v{record.schema_version} is newer than this release knows (v{cls.SCHEMA_VERSION})",
            )
        try:
            data = upcast(record.type, record.schema_version, dict(record.data), cls.SCHEMA_VERSION)
        except KeyError as exc:
            raise EventDecodeError(record, str(exc)) from exc
    else:
        data = record.data
    try:
        kwargs: dict[str, Any] = {**data, **_envelope(record)}
        for key in _DATETIME_FIELDS[cls]:
            value = kwargs.get(key)
            if type(value) is str:
                kwargs[key] = datetime.fromisoformat(value)
        event = cls(**kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise EventDecodeError(record, f"malformed payload ({type(exc).__name__}: {exc})") from exc
    _check_types(record, event)
    return event


def _envelope(record: RecordedEvent) -> dict[str, Any]:
    meta = record.metadata
    return {"at": record.occurred_at, "actor": meta["actor"], "reason": meta["reason"]}


def _check_types(record: RecordedEvent, event: Event) -> None:
    """Reject payloads whose values do not have the declared types (a str where an int belongs)."""
    for name, allowed in _FIELD_TYPES[type(event)].items():
        value = getattr(event, name)
        if type(value) in allowed:
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            expected = " | ".join(t.__name__ for t in allowed)
            raise EventDecodeError(record, f"field {name!r} should be {expected}, got {type(value).__name__}")
