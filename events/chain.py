"""The hash chain that makes the event log tamper-evident.

Each event's ``hash`` is SHA-256 over the previous event's hash in its stream (hex text; empty before
version 1) followed by the event's canonical content: the compact JSON array
``[stream_id, version, type, schema_version, data, metadata, occurred_at]`` with object keys sorted and
``occurred_at`` in UTC as RFC 3339 (orjson's datetime form). The content is canonical over what the store
reads back, not over the bytes it wrote, so a hash computed on append equals the one recomputed from a
read (JSONB reorders keys; SQLite keeps the text as written).

Editing, deleting, inserting or reordering an event changes the hash of that version and of every one
after it in the stream; a verifier recomputing the chain finds the first bad version. The chain has no
secret: whoever can write the database can also recompute every hash after an edit. Hashes delivered
elsewhere (the relay's webhook payloads carry them) are the anchors that make such a rewrite show.

Postgres computes the same function in SQL (``sha256(convert_to(prev, 'UTF8') || content)``) so that
an append stays one statement; a contract test checks both against this module.

The streams' chains cannot show what needs no hash work: a whole stream deleted, a stream cut short
(its read-model row set to match), a stream's last event edited with its own hash recomputed. So the
log is chained as a whole too: each event's ``log_hash`` is SHA-256 over the text
``<log hash of the event before it in position order>:<position>:<its stream hash>``, followed by
``:<idempotency key>`` when the event has one (UTF-8; the previous log hash is empty for the first
event). Deleting, inserting, moving or editing any event
breaks the log chain at the first position after it; only the log's last events can be cut or
rewritten without a break, which a head kept outside the database (``sandboxctl audit head``) shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import orjson

from sandbox_lifecycle.events.records import NewEvent

_SORTED = orjson.OPT_SORT_KEYS


def content(
    stream_id: str,
    version: int,
    type: str,
    schema_version: int,
    data: Any,
    metadata: Any,
    occurred_at: datetime,
) -> bytes:
    """The canonical bytes of one event's content (see the module doc)."""
    if occurred_at.tzinfo is not UTC:
        occurred_at = occurred_at.astimezone(UTC)
    return orjson.dumps(
        (stream_id, version, type, schema_version, data, metadata, occurred_at), option=_SORTED
    )


def link(previous: str | None, event_content: bytes) -> str:
    """The hash of an event whose stream's previous event has hash ``previous`` (None: version 1)."""
    return sha256((previous or "").encode("ascii") + event_content).hexdigest()


def event_hash(previous: str | None, record: Any) -> str:
    """The hash of a RecordedEvent (or anything with its fields) after ``previous``."""
    return link(
        previous,
        content(
            record.stream_id,
            record.version,
            record.type,
            record.schema_version,
            record.data,
            record.metadata,
            record.occurred_at,
        ),
    )


def hashes(
    previous: str | None, stream_id: str, expected_version: int, events: Sequence[NewEvent]
) -> list[str]:
    """The hashes of ``events`` appended at ``expected_version`` after the event of hash ``previous``:
    what every store writes in its append transaction (Postgres computes the same in SQL)."""
    out = []
    for i, e in enumerate(events, start=expected_version + 1):
        previous = link(
            previous, content(stream_id, i, e.type, e.schema_version, e.data, e.metadata, e.occurred_at)
        )
        out.append(previous)
    return out


def log_link(
    previous: str | None, position: int, stream_hash: str, idempotency_key: str | None = None
) -> str:
    """The log hash of the event at ``position`` whose stream hash is ``stream_hash`` and idempotency
    key ``idempotency_key``, after the event of log hash ``previous`` (None: the first event of the
    log). Postgres computes the same in SQL.

    The key is not event content (the stream hash, released with revision 0002, leaves it out), but a
    rewritten key makes a retried request append again, so the log's chain covers it: a keyless event's
    text has three fields, a keyed one's a fourth after another ``:`` (the stream hash is hex, so the
    split is unambiguous and an empty key differs from none). UTF-8, as Postgres's ``convert_to``.
    """
    text = f"{previous or ''}:{position}:{stream_hash}"
    if idempotency_key is not None:
        text += f":{idempotency_key}"
    return sha256(text.encode("utf-8")).hexdigest()
