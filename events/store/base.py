"""What both backends of the event store share: the reads as SQL, argument checks, projection rows.

A backend (``sqlite.py``, ``postgres.py``) supplies its connections, the writes and ``_fetch``, which runs
one read on the driver directly: that is where per-statement overhead and round trips bound
throughput. This module imports no driver and not SQLAlchemy: a SQLite store never loads either (a
short CLI command paid about 0.4 s for SQLAlchemy alone), and a SQLite-only install never needs psycopg.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from sandbox_lifecycle.events.names import EXPIRED_STATE
from sandbox_lifecycle.events.records import (
    AppendResult,
    CapacityLimit,
    CapacityRefused,
    ChainedEvent,
    ConcurrencyError,
    CorruptStream,
    Deadline,
    LogLink,
    NewEvent,
    Projection,
    RecordedEvent,
    SandboxLeased,
    SandboxRow,
    StoreError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

DEFAULT_BUSY_TIMEOUT = 5.0
# How long a Postgres append waits for the append lock before giving up with DatabaseLocked: a writer
# that holds it longer is stuck (e.g. an idle-in-transaction session), not busy.
DEFAULT_LOCK_TIMEOUT = 10.0
REPLACE_CHUNK = 1000

# The read model's columns are SandboxRow's fields, in order (a test holds the table to the same).
SANDBOX_COLUMNS = tuple(f.name for f in fields(SandboxRow))
_TIME_INDEXES = tuple(i for i, f in enumerate(fields(SandboxRow)) if "datetime" in str(f.type))
DEADLINE_COLUMNS = ("sandbox_id", "kind", "due_at", "version")

_SELECT_SANDBOXES = f"SELECT {', '.join(SANDBOX_COLUMNS)} FROM sandboxes"
_SANDBOX_ORDER = " ORDER BY created_at, id"
_READ_SANDBOX = _SELECT_SANDBOXES + " WHERE id = ?"
# The state as a literal, so Postgres can prove the partial unique index's predicate and use it.
_READ_LIVE = _SELECT_SANDBOXES + f" WHERE conversation_id = ? AND kind = ? AND state <> '{EXPIRED_STATE}'"
_READ_SANDBOXES = _SELECT_SANDBOXES + _SANDBOX_ORDER
_READ_SANDBOXES_IN = _SELECT_SANDBOXES + " WHERE state = ?" + _SANDBOX_ORDER
_SELECT_DEADLINES = f"SELECT {', '.join(DEADLINE_COLUMNS)} FROM sandbox_deadlines"
_DEADLINE_ORDER = " ORDER BY due_at, sandbox_id, kind"
_READ_DUE = _SELECT_DEADLINES + " WHERE due_at <= ?" + _DEADLINE_ORDER + " LIMIT ?"
_READ_DEADLINES = _SELECT_DEADLINES + _DEADLINE_ORDER
_READ_NEXT_DEADLINE = "SELECT min(due_at) FROM sandbox_deadlines"
_READ_STREAM_IDS = "SELECT DISTINCT stream_id FROM events ORDER BY stream_id"
INSERT_SANDBOX = (
    f"INSERT INTO sandboxes ({', '.join(SANDBOX_COLUMNS)}) VALUES ({', '.join('?' for _ in SANDBOX_COLUMNS)})"
)
INSERT_DEADLINE = f"INSERT INTO sandbox_deadlines ({', '.join(DEADLINE_COLUMNS)}) VALUES (?, ?, ?, ?)"

# The last event of the batch that first used the key: what the retried append would have returned.
SELECT_DUPLICATE = (
    "SELECT e.version, e.position FROM events AS k "
    "JOIN events AS e ON e.stream_id = k.stream_id AND e.version >= k.version AND e.version < k.version + ? "
    "WHERE k.stream_id = ? AND k.idempotency_key = ? ORDER BY e.version DESC LIMIT 1"
)

# Every read of events goes through the backend's raw reader (``_records``), with its own ``{columns}``.
_READ_ALL = "SELECT {columns} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_READ_STREAM = "SELECT {columns} FROM events WHERE stream_id = ? AND version > ? ORDER BY version"
# Rebuilds need each stream in version order, not the global commit order: keyset pages over the
# unique (stream_id, version) index, bounded to a range of stream ids, so parallel workers each read
# only their own rows. Both databases turn the row-value comparison into an index range.
_READ_STREAMS = (
    "SELECT {columns} FROM events WHERE (stream_id, version) > (?, ?) ORDER BY stream_id, version LIMIT ?"
)
_READ_STREAMS_BEFORE = (
    "SELECT {columns} FROM events WHERE (stream_id, version) > (?, ?) AND stream_id < ? "
    "ORDER BY stream_id, version LIMIT ?"
)
# The stored hashes of a page of the chain reader, bounded by its last key: rows appended since the
# page was read fall outside or are simply not looked up.
_READ_HASHES = (
    "SELECT stream_id, version, hash FROM events "
    "WHERE (stream_id, version) > (?, ?) AND (stream_id, version) <= (?, ?)"
)
_POSITION_BOUNDS = "SELECT min(position), max(position) FROM events"
# Stream ids of sampled events (by position), in the database's own order of stream ids: the ranges
# cut at their quantiles hold about equal numbers of events. Ids are never compared in Python, whose
# order may differ from the database collation.
_SAMPLE_STREAMS = "SELECT stream_id FROM events WHERE position IN ({marks}) ORDER BY stream_id"
# How many events are sampled per part when splitting the streams.
_SAMPLES_PER_PART = 64

MISSING_SCHEMA = "the event store schema is missing; run `sandboxctl db upgrade`"
LOG_HEAD_MISSING = (
    "the log's head row (table log_head) is missing: it was deleted behind the store's back; "
    "run `sandboxctl audit verify` and restore the database from a backup"
)
# The log's chain in position order: what the verifier recomputes, no event content needed (each
# stream hash covers its event's content, and the stream chains are checked on their own). The first
# page has no lower bound: a row at position 0 or below (refused by the CHECK, which whoever can write
# the database can drop) is still in the verifier's pass, where it is named.
_LINK_COLUMNS = "SELECT position, hash, log_hash, idempotency_key FROM events"
_READ_LINKS = _LINK_COLUMNS + " WHERE position > ? ORDER BY position LIMIT ?"
_READ_FIRST_LINKS = _LINK_COLUMNS + " ORDER BY position LIMIT ?"
# The chain reader's raw rows, for a page the fast reader could not build: every column as stored, the
# JSON as text (a backend's ``_CHAIN_COLUMNS``), so each row is built, or found unreadable, on its own.
READ_CHAIN_ROWS = (
    "SELECT {columns} FROM events WHERE (stream_id, version) > ({mark}, ?) "
    "ORDER BY stream_id, version LIMIT ?"
)
_PLACEHOLDER_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_READ_LOG_HEAD = "SELECT position, hash FROM log_head WHERE id = 1"

# Leases of calls in flight (core/inflight.py). Taking one also drops every expired one: the table holds
# about as many rows as there are calls in flight, whatever crashed holders left behind.
PURGE_LEASES = "DELETE FROM sandbox_leases WHERE expires_at <= ?"
INSERT_LEASE = "INSERT INTO sandbox_leases (lease_id, sandbox_id, holder, expires_at) VALUES (?, ?, ?, ?)"
RENEW_LEASE = "UPDATE sandbox_leases SET expires_at = ? WHERE lease_id = ?"
RELEASE_LEASE = "DELETE FROM sandbox_leases WHERE lease_id = ?"
# What an append that must find the sandbox unleased counts, in its transaction, under the append lock.
LEASES_HELD = "SELECT count(*) FROM sandbox_leases WHERE sandbox_id = ? AND expires_at > ?"
_LEASED = "SELECT DISTINCT sandbox_id FROM sandbox_leases WHERE expires_at > ?"


def utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the event log stores aware UTC datetimes only")
    return value.astimezone(UTC)


def check_append(events: Sequence[NewEvent], expected_version: int, projection: Projection | None) -> None:
    """What every store refuses before touching its storage (the in-memory test double calls it too)."""
    if not events:
        raise ValueError("append needs at least one event")
    if expected_version < 0:
        raise ValueError(f"expected_version must be >= 0, not {expected_version}")
    if projection is not None:
        check_projection(projection)


def capacity_count_sql(limit: CapacityLimit, stream_id: str, mark: str) -> tuple[str, tuple[Any, ...]]:
    """How many other sandboxes the limit counts, read in the append's transaction (after its lock).

    The appended sandbox's own row is left out: the append counts it (it is about to hold compute).
    """
    marks = ", ".join(mark for _ in limit.states)
    counted = f"state IN ({marks})"
    params: tuple[Any, ...] = limit.states
    if limit.states_with_ref:
        with_ref = ", ".join(mark for _ in limit.states_with_ref)
        counted = f"({counted} OR (state IN ({with_ref}) AND provider_ref IS NOT NULL))"
        params = (*params, *limit.states_with_ref)
    sql = f"SELECT count(*) FROM sandboxes WHERE {counted} AND id <> {mark}"
    params = (*params, stream_id)
    if limit.kind is not None:
        sql += f" AND kind = {mark}"
        params = (*params, limit.kind)
    return sql, params


def capacity_refusal(stream_id: str, limit: CapacityLimit, others: int) -> CapacityRefused | None:
    """The refusal when ``others`` sandboxes already fill the limit, else None."""
    return CapacityRefused(stream_id, limit, others) if others + 1 > limit.limit else None


def lease_refusal(stream_id: str, held: int) -> SandboxLeased | None:
    """The refusal of an append that must find the sandbox unleased, when ``held`` leases are valid."""
    return SandboxLeased(stream_id, held) if held else None


def check_projection(projection: Projection) -> None:
    # Deadlines are replaced per sandbox: one of another sandbox would silently survive its replacement.
    for d in projection.deadlines:
        if d.sandbox_id != projection.row.id:
            raise ValueError(f"deadline of {d.sandbox_id!r} in the projection of {projection.row.id!r}")


def live_conflict(stream_id: str, expected_version: int, projection: Projection | None) -> ConcurrencyError:
    detail = "the conversation already has a live sandbox of this kind"
    if projection is not None:
        row = projection.row
        detail = f"conversation {row.conversation_id!r} already has a live {row.kind!r} sandbox"
    return ConcurrencyError(stream_id, expected_version, detail)


class SqlEventStore:
    """The EventStore port on SQL: ``sqlite:///path`` (embedded) or ``postgresql+psycopg://``.

    The shared base of ``SqliteEventStore`` and ``PostgresEventStore``: ``open_store(url)`` (the package's
    factory) opens the one of the URL's backend. Every option is accepted by both, each uses its own:
    ``busy_timeout`` and ``sqlite_synchronous`` on SQLite, ``lock_timeout`` on Postgres.

    Thread-safe; one instance per process is enough. The schema must exist already (``events.migrate``).
    """

    dialect: ClassVar[str]
    # The ``{columns}`` of the event reads: position, stream_id, version, type, schema_version, the
    # payload and metadata as one JSON array text, occurred_at (see the backends' ``_event_rows``).
    _EVENT_COLUMNS: ClassVar[str]
    # The driver's parameter mark, for the few statements built at run time.
    _MARK: ClassVar[str]

    def __new__(cls, *_args: Any, **_options: Any) -> Self:
        if cls is SqlEventStore:
            raise TypeError(
                "SqlEventStore is the backends' shared base: open a store with "
                "sandbox_lifecycle.events.store.open_store(url)"
            )
        return super().__new__(cls)

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        self._busy_timeout = busy_timeout
        self._lock_timeout = lock_timeout
        self._sqlite_synchronous = sqlite_synchronous
        self._validate_options()
        self._open(url_or_engine)

    @property
    def engine(self) -> Engine:
        """A SQLAlchemy engine on the same database, for what runs through SQLAlchemy (migrations,
        relay checkpoints, tests)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- what a backend supplies -------------------------------------------------------------------

    def _validate_options(self) -> None:
        """Refuse bad options before connecting."""

    def _open(self, url_or_engine: str | Engine) -> None:
        """Get ready to connect to the database (connections are made on first use)."""
        raise NotImplementedError

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of one read (``?`` marks), on the driver; errors as StoreError."""
        raise NotImplementedError

    def _time_out(self, value: Any) -> datetime:
        """A time column as the driver returns it, as an aware UTC datetime."""
        raise NotImplementedError

    def _time_in(self, value: datetime) -> Any:
        """An aware datetime as the driver binds it to compare with a time column."""
        raise NotImplementedError

    def _append(
        self,
        stream_id: str,
        expected_version: int,
        new_events: Sequence[NewEvent],
        key: str | None,
        projection: Projection | None,
    ) -> AppendResult:
        raise NotImplementedError

    def _write_projection(self, projection: Projection) -> None:
        raise NotImplementedError

    def _append_within(
        self,
        stream_id: str,
        expected_version: int,
        new_events: Sequence[NewEvent],
        key: str | None,
        projection: Projection | None,
        capacity: Sequence[CapacityLimit],
        unleased_at: datetime | None = None,
    ) -> AppendResult:
        """``_append``, refused with CapacityRefused when a limit is full, or with SandboxLeased when the
        sandbox has a lease valid at ``unleased_at``: both checked under the append lock."""
        raise NotImplementedError

    def _write_leases(self, statements: Sequence[tuple[str, tuple[Any, ...]]], what: str) -> int:
        """Run lease writes (``?`` marks) in one transaction; the row count of the last one.

        Under the append lock: a lease committed before an eviction's append takes that lock is seen
        by its check, and one taken after waits for the eviction to commit, so the holder's next load
        sees the suspend (and waits for it, then resumes) instead of calling into a dying sandbox.
        """
        raise NotImplementedError

    def _event_rows(self, sql: str, params: tuple[Any, ...], what: str) -> list[RecordedEvent]:
        """Run an event read (``{columns}`` filled in) on the driver and build its records."""
        raise NotImplementedError

    def replace_all_projections(self, projections: Iterable[Projection]) -> None:
        """Replace every read-model row and deadline in one transaction (``replay --rebuild``).

        Readers see the old projections until the new ones are committed.
        """
        raise NotImplementedError

    # -- writes ------------------------------------------------------------------------------------

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
        check_append(events, expected_version, projection)
        if capacity or unleased_at is not None:
            return self._append_within(
                stream_id,
                expected_version,
                events,
                idempotency_key,
                projection,
                capacity,
                None if unleased_at is None else utc(unleased_at),
            )
        return self._append(stream_id, expected_version, events, idempotency_key, projection)

    # -- leases of calls in flight -------------------------------------------------------------------

    def take_lease(
        self, lease_id: str, sandbox_id: str, holder: str, now: datetime, expires_at: datetime
    ) -> None:
        self._write_leases(
            [
                (PURGE_LEASES, (self._time_in(utc(now)),)),
                (INSERT_LEASE, (lease_id, sandbox_id, holder, self._time_in(utc(expires_at)))),
            ],
            f"lease of {sandbox_id!r}",
        )

    def renew_lease(self, lease_id: str, expires_at: datetime) -> bool:
        done = self._write_leases(
            [(RENEW_LEASE, (self._time_in(utc(expires_at)), lease_id))], f"lease {lease_id!r}"
        )
        return done > 0

    def release_lease(self, lease_id: str) -> None:
        self._write_leases([(RELEASE_LEASE, (lease_id,))], f"lease {lease_id!r}")

    def leased_sandboxes(self, now: datetime) -> set[str]:
        return {sid for (sid,) in self._fetch(_LEASED, (self._time_in(utc(now)),))}

    def write_projection(self, projection: Projection) -> None:
        check_projection(projection)
        self._write_projection(projection)

    # -- reads -------------------------------------------------------------------------------------

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        records = self._records(_READ_STREAM, (stream_id, after_version), f"stream {stream_id!r}")
        # Versions are unique per stream and come ascending, all above after_version: they are exactly
        # after_version+1 .. after_version+n iff the last one is after_version+n. One comparison.
        if records and records[-1].version != after_version + len(records):
            raise _gap(records, (stream_id, after_version))
        return records

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._records(_READ_ALL, (after_position, limit), "the event feed")

    def read_streams(
        self, after: tuple[str, int] = ("", 0), before: str | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        if before is None:
            records = self._records(_READ_STREAMS, (*after, limit), "the event streams")
        else:
            records = self._records(_READ_STREAMS_BEFORE, (*after, before, limit), "the event streams")
        _check_streams(records, after)
        return records

    def read_chain(self, after: tuple[Any, Any] = ("", 0), limit: int = 1000) -> list[ChainedEvent]:
        """Events in (stream id, version) order with their stored hashes, for the chain verifier.

        Unlike ``read_streams`` a missing version is not an error here: the verifier names it. Nor is a
        row that cannot be read as an event: it comes with its ``problem`` (see ChainedEvent), so one
        crafted row cannot stop the audit of the others. ``after`` is the last item's (stream id,
        version) as returned, whatever their types: a crafted row's values page on exactly.
        """
        try:
            # A crafted row's own values (text that is not UTF-8, a version that is not an integer)
            # cannot be bound by the fast reader: the page after one is read row by row too.
            clean = isinstance(after[0], str) and _utf8(after[0]) and type(after[1]) is int
            items = self._fast_chain(after, limit) if clean else None
        except StoreError:  # a row the fast reader could not build or decode: read the page row by row
            items = None
        if items is None:
            items = [self._chain_item(row) for row in self._chain_rows(after, limit)]
        return items

    def _fast_chain(self, after: tuple[Any, Any], limit: int) -> list[ChainedEvent] | None:
        """The page through the fast reader; None when a row is not what the store writes."""
        records = self._records(_READ_STREAMS, (*after, limit), "the event streams")
        if not records:
            return []
        last = records[-1]
        rows = self._fetch(_READ_HASHES, (*after, last.stream_id, last.version))
        hashes = {(s, v): h for s, v, h in rows}
        items = [ChainedEvent(r, hashes.get((r.stream_id, r.version))) for r in records]
        for item in items:
            if _type_problem(item.event, item.hash) is not None:
                return None
        return items

    def _chain_rows(self, after: tuple[Any, Any], limit: int) -> list[tuple[Any, ...]]:
        """The raw rows of a chain page (``READ_CHAIN_ROWS``), however malformed their values."""
        raise NotImplementedError

    def _chain_item(self, row: tuple[Any, ...]) -> ChainedEvent:
        """One raw row as a ChainedEvent, or as a placeholder with the reason it cannot be read."""
        # Imported here: orjson loads uuid and platform, which `ls` and `show` on SQLite do not need.
        import orjson

        position, sid, version, type_, schema_version, data, meta, occurred_at, stored = row
        placeholder = RecordedEvent(position, sid, version, "", 0, {}, {}, _PLACEHOLDER_TIME)
        try:
            d = orjson.loads(data) if isinstance(data, str | bytes) else data
            m = orjson.loads(meta) if isinstance(meta, str | bytes) else meta
        except orjson.JSONDecodeError as exc:
            return ChainedEvent(placeholder, None, f"its data or metadata is not valid JSON ({exc})")
        try:
            at = self._time_out(occurred_at)
        except (ValueError, TypeError, AttributeError) as exc:
            return ChainedEvent(placeholder, None, f"its occurred_at is not a timestamp ({exc})")
        event = RecordedEvent(position, sid, version, type_, schema_version, d, m, at)
        if (problem := _type_problem(event, stored)) is not None:
            return ChainedEvent(placeholder, None, problem)
        return ChainedEvent(event, stored)

    def read_links(self, after_position: int | None = None, limit: int = 1000) -> list[LogLink]:
        """The log's chain in position order: (position, stream hash, log hash, idempotency key) of each
        event after ``after_position``; None (the default) starts at the first row, whatever its
        position."""
        if after_position is None:
            rows = self._fetch_text(_READ_FIRST_LINKS, (limit,))
        else:
            rows = self._fetch_text(_READ_LINKS, (after_position, limit))
        return [LogLink(p, h, g, k) for p, h, g, k in rows]

    def _fetch_text(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """``_fetch`` for the verifier's reads, where a text column may hold bytes that are not UTF-8
        (SQLite does not check): such text comes back with surrogate escapes, never as an error."""
        return self._fetch(sql, params)

    def log_head(self) -> tuple[int, str] | None:
        """The position and log hash the head row holds (None when the row is gone)."""
        found = self._fetch(_READ_LOG_HEAD)
        return (int(found[0][0]), str(found[0][1])) if found else None

    def _records(self, sql: str, params: tuple[Any, ...], what: str) -> list[RecordedEvent]:
        """Every read of events: the backend's raw reader, which raises CorruptStream for a row it
        cannot build (see ``first_problem``)."""
        return self._event_rows(sql.format(columns=self._EVENT_COLUMNS), params, what)

    def split_streams(self, parts: int) -> list[str]:
        if parts < 1:
            raise ValueError(f"cannot split the streams into {parts} parts")
        if parts == 1:
            return []
        ((first, last),) = self._fetch(_POSITION_BOUNDS)
        if first is None:
            return []
        # Evenly spaced positions: a stream is sampled in proportion to its number of events.
        # Positions may have gaps (rolled-back appends); a missed sample only blurs a quantile.
        n = min(parts * _SAMPLES_PER_PART, last - first + 1)
        positions = sorted({first + (last - first) * i // max(n - 1, 1) for i in range(n)})
        marks = ", ".join("?" for _ in positions)
        sample = [sid for (sid,) in self._fetch(_SAMPLE_STREAMS.format(marks=marks), tuple(positions))]
        bounds: list[str] = []
        for i in range(1, parts):
            sid = sample[len(sample) * i // parts]
            # The sample is sorted, so a repeat can only be the previous bound (one long stream).
            if sid != sample[0] and (not bounds or sid != bounds[-1]):
                bounds.append(sid)
        return bounds

    def _sandboxes(self, sql: str, params: tuple[Any, ...] = ()) -> list[SandboxRow]:
        # Positional: the columns are SandboxRow's fields in order; times are the only conversions.
        times = self._time_out
        found: list[SandboxRow] = []
        for row in self._fetch(sql, params):
            values: list[Any] = list(row)
            for i in _TIME_INDEXES:
                if values[i] is not None:
                    values[i] = times(values[i])
            found.append(SandboxRow(*values))
        return found

    def _deadlines(self, sql: str, params: tuple[Any, ...] = ()) -> list[Deadline]:
        times = self._time_out
        return [
            Deadline(sid, kind, times(due), version) for sid, kind, due, version in self._fetch(sql, params)
        ]

    def get_sandbox(self, sandbox_id: str) -> SandboxRow | None:
        found = self._sandboxes(_READ_SANDBOX, (sandbox_id,))
        return found[0] if found else None

    def find_live(self, conversation_id: str, kind: str) -> SandboxRow | None:
        found = self._sandboxes(_READ_LIVE, (conversation_id, kind))
        return found[0] if found else None

    def list_sandboxes(self, state: str | None = None) -> list[SandboxRow]:
        if state is None:
            return self._sandboxes(_READ_SANDBOXES)
        return self._sandboxes(_READ_SANDBOXES_IN, (state,))

    def due_deadlines(self, now: datetime, limit: int = 1000) -> list[Deadline]:
        return self._deadlines(_READ_DUE, (self._time_in(utc(now)), limit))

    def next_deadline(self) -> datetime | None:
        ((due,),) = self._fetch(_READ_NEXT_DEADLINE)
        return None if due is None else self._time_out(due)

    def all_deadlines(self) -> list[Deadline]:
        return self._deadlines(_READ_DEADLINES)

    def stream_ids(self) -> list[str]:
        return [sid for (sid,) in self._fetch(_READ_STREAM_IDS)]


def _type_problem(event: RecordedEvent, stored: Any) -> str | None:
    """What in a built row is not what the store writes (SQLite keeps whatever type it is given)."""
    for what, value, kind in (
        ("stream id", event.stream_id, str),
        ("version", event.version, int),
        ("type", event.type, str),
        ("schema version", event.schema_version, int),
    ):
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its {what} is not {'text' if kind is str else 'an integer'} ({type(value).__name__})"
        if isinstance(value, str) and not value.isascii() and not _utf8(value):
            return f"its {what} is not valid UTF-8"
    if stored is not None and not (isinstance(stored, str) and _utf8(stored)):
        return "its hash is not UTF-8 text"
    if not isinstance(event.occurred_at, datetime):
        return "its occurred_at is not a timestamp"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes that were not UTF-8
        return False
    return True


def first_problem(checks: Iterable[tuple[str, Callable[[], object]]]) -> str | None:
    """What is wrong with a row the fast reader could not build: the first ``(what, parse)`` that fails.

    Only called once a page has failed to build, so it may take its time trying each part alone.
    """
    for what, parse in checks:
        try:
            parse()
        except (ValueError, TypeError, AttributeError) as exc:
            return f"{what} ({type(exc).__name__}: {exc})"
    return None


_VERSION = itemgetter(2)


def _check_streams(records: list[RecordedEvent], after: tuple[str, int]) -> None:
    """Raise CorruptStream at the first version missing from a ``read_streams`` page.

    The page is ordered by (stream id, version) and versions are unique per stream, so a stream's rows
    are whole iff they count up to their last version: from 1, or from ``after``'s version for the
    stream the page continues. Runs start at the rows holding version 1, found by list.index (in C),
    so the Python work is per stream, not per event: this runs on every page of a rebuild.
    """
    if not records:
        return
    versions = list(map(_VERSION, records))
    versions.append(1)  # a sentinel: the last run ends at the end of the page
    n, start = len(records), 0
    base = after[1] if records[0].stream_id == after[0] else 0
    while start < n:
        end = versions.index(1, start + 1)
        if versions[end - 1] != base + end - start or records[start].stream_id != records[end - 1].stream_id:
            raise _gap(records, after)
        start, base = end, 0


def _gap(records: Sequence[RecordedEvent], after: tuple[str, int]) -> CorruptStream:
    """The first missing version in records ordered by (stream id, version), read after ``after``."""
    previous_stream, previous_version = after
    for r in records:
        expected = previous_version + 1 if r.stream_id == previous_stream else 1
        if r.version != expected:
            return CorruptStream(
                r.stream_id,
                expected,
                f"version {expected} is missing: the stream goes from {expected - 1} to {r.version!r}",
            )
        previous_stream, previous_version = r.stream_id, r.version
    raise AssertionError("no gap in the records")  # pragma: no cover - only called on a gap


def row_values(row: SandboxRow, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The row's column values in SANDBOX_COLUMNS order, times as ``time`` binds them."""
    return tuple(
        time(v) if isinstance(v, datetime) else v for v in (getattr(row, name) for name in SANDBOX_COLUMNS)
    )


def deadline_values(d: Deadline, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    return (d.sandbox_id, d.kind, time(d.due_at), d.version)
