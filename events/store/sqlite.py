"""The event store on SQLite: WAL, one writer (``BEGIN IMMEDIATE``), on the standard library's sqlite3.

No SQLAlchemy: opening the store and a few reads and appends is what every short `sandboxctl` command
does, and importing SQLAlchemy cost more than all of that (``engine`` makes one, on first use, for what
runs through it: migrations, relay checkpoints, tests).

Commit order, which a reader tailing ``read_all`` relies on, comes from SQLite's single writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import unquote

from sandbox_lifecycle.events.records import (
    AppendResult,
    CapacityLimit,
    ConcurrencyError,
    CorruptStream,
    DatabaseLocked,
    NewEvent,
    Projection,
    RecordedEvent,
    StoreError,
)
from sandbox_lifecycle.events.store.base import (
    INSERT_DEADLINE,
    INSERT_SANDBOX,
    LEASES_HELD,
    LOG_HEAD_MISSING,
    MISSING_SCHEMA,
    READ_CHAIN_ROWS,
    REPLACE_CHUNK,
    SANDBOX_COLUMNS,
    SELECT_DUPLICATE,
    SqlEventStore,
    capacity_count_sql,
    capacity_refusal,
    deadline_values,
    first_problem,
    lease_refusal,
    live_conflict,
    row_values,
    utc,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_UPSERT_SANDBOX = (
    INSERT_SANDBOX
    + " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in SANDBOX_COLUMNS if c != "id")
)
_DELETE_DEADLINES = "DELETE FROM sandbox_deadlines WHERE sandbox_id = ?"
_CURRENT_VERSION = "SELECT max(version) FROM events WHERE stream_id = ?"
_FIND_KEY = "SELECT 1 FROM events WHERE stream_id = ? AND idempotency_key = ?"
_INSERT_EVENT = (
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at, "
    "idempotency_key, hash, position, log_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The version check and the first insert in one statement: inserts nothing when the stream moved on.
_INSERT_FIRST_EVENT = (
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at, "
    "idempotency_key, hash, position, log_hash) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
    "WHERE coalesce((SELECT max(version) FROM events WHERE stream_id = ?), 0) = ?"
)
# The log's head (events/tables.py ``log_head``) and the position SQLite would give the next row: the
# log hash covers the position, so positions are chosen before the insert (as rowid would: max + 1).
_LOG_HEAD = "SELECT (SELECT max(position) FROM events), hash FROM log_head WHERE id = 1"
_MOVE_HEAD = "UPDATE log_head SET previous_hash = hash, position = ?, hash = ? WHERE id = 1"
_PREVIOUS_HASH = "SELECT hash FROM events WHERE stream_id = ? AND version = ?"
# Streams whose last hash this process remembers; past this many the memory starts over.
_MAX_HEADS = 10_000
# Idle read connections kept for reuse (a connection is cheap, its first statements less so).
_MAX_IDLE_READERS = 8


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///path`` URL (relative to the working directory, or ``sqlite:////abs``),
    or None for an in-memory database (``sqlite://``, ``sqlite:///:memory:``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.partition("+")[0] != "sqlite":
        raise StoreError(f"not a SQLite URL: {url!r}")
    path, _, query = rest.partition("?")
    if query:
        raise StoreError(f"{url!r}: SQLite URLs take no query parameters here (got {query!r})")
    path = unquote(path[1:] if path.startswith("/") else path)
    return None if path in ("", ":memory:") else path


def _text_time(value: datetime) -> str:
    """How a time is stored: naive UTC text, always with microseconds, so that stored text and a bound
    parameter compare exactly (a whole second shortened to no fraction would sort before the same
    instant written in full, and "due at exactly now" could not tell ``<`` from ``<=``)."""
    return utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _json_text(value: Any) -> str:
    """Event data and metadata as stored: written by orjson, which reads them back (several times
    cheaper than json.dumps, which pays for the hash chain's own encoding and digest)."""
    # Imported here: orjson loads uuid and platform, which `ls` and `show` do not need.
    import orjson

    return orjson.dumps(value).decode()


def _lenient_text(raw: bytes) -> str:
    """Text as stored even when it is not UTF-8 (SQLite does not check what it is given): surrogate
    escapes keep the bytes, so the verifier can name the row and page on from its exact values."""
    return raw.decode("utf-8", "surrogateescape")


def _schema_missing(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)


def _checks(dm: str, occurred_at: str) -> list[tuple[str, Callable[[], object]]]:
    def two_values() -> None:
        # Imported here: orjson loads uuid and platform, which `ls` and `show` do not need.
        import orjson

        _d, _m = orjson.loads(dm)

    return [
        ("its data or metadata is not valid JSON", two_values),
        (
            f"its occurred_at {occurred_at.removesuffix('+00:00')!r} is not a timestamp",
            lambda: datetime.fromisoformat(occurred_at),
        ),
    ]


class SqliteEventStore(SqlEventStore):
    """The embedded store: ``sqlite:///path``."""

    dialect = "sqlite"
    _MARK = "?"
    # The payload and metadata come as ONE JSON text, parsed by a single orjson call; the naive UTC
    # text gets its offset in SQL, so parsing it yields the UTC singleton directly (several times
    # cheaper than parsing, then .replace(tzinfo=UTC)).
    _EVENT_COLUMNS: ClassVar[str] = (
        "position, stream_id, version, type, schema_version, '[' || data || ',' || meta || ']', "
        "occurred_at || '+00:00'"
    )

    _CHAIN_COLUMNS: ClassVar[str] = (
        "position, stream_id, version, type, schema_version, data, meta, occurred_at, hash"
    )

    def _validate_options(self) -> None:
        if self._sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"sqlite_synchronous must be NORMAL or FULL, not {self._sqlite_synchronous!r}")

    def _open(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, str):
            url = url_or_engine
        else:
            if url_or_engine.dialect.name != self.dialect:
                raise StoreError(f"{type(self).__name__} cannot open {url_or_engine.url!r}")
            url = str(url_or_engine.url)
        self._url = url
        self._path = sqlite_path(url)
        if self._path is None and not isinstance(url_or_engine, str):
            # The engine's database lives in its own connections: a new one here would be another.
            raise StoreError("an in-memory SQLite engine cannot be shared; use SqliteEventStore.scratch()")
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        # An in-memory database lives in its one connection: reads and writes share it.
        self._memory: sqlite3.Connection | None = None
        self._engine: Engine | None = None
        # stream id -> (version, hash) of the last event this process appended to it. An event is
        # immutable once committed, so the hash of (stream, expected_version) read from here is the one
        # in the database whoever appended since: the chain costs no extra read on the hot path.
        self._heads: dict[str, tuple[int, str]] = {}

    @classmethod
    def scratch(cls) -> SqliteEventStore:
        store = cls("sqlite://")
        # Imported here: the tables are SQLAlchemy's (about 0.4 s), which a file store never loads.
        from sandbox_lifecycle.events.tables import metadata

        metadata.create_all(store.engine)
        return store

    @property
    def engine(self) -> Engine:
        with self._pool_lock:
            if self._engine is None:
                # Imported here: SQLAlchemy takes about 0.4 s to load; a short CLI command never needs it.
                import sqlalchemy as sa

                if self._path is None:
                    shared = self._connection_of_memory()
                    self._engine = sa.create_engine(
                        "sqlite://", creator=lambda: shared, poolclass=sa.pool.StaticPool
                    )
                else:
                    self._engine = sa.create_engine(
                        self._url, connect_args={"check_same_thread": False, "timeout": self._busy_timeout}
                    )
            return self._engine

    def close(self) -> None:
        """Close every connection (a later call opens new ones; an in-memory database is gone)."""
        with self._write_lock:
            if self._writer is not None and self._writer is not self._memory:
                self._writer.close()
            self._writer = None
        with self._pool_lock:
            for db in self._idle:
                db.close()
            self._idle.clear()
            engine, self._engine = self._engine, None
            memory, self._memory = self._memory, None
        if engine is not None:
            engine.dispose()
        if memory is not None:
            memory.close()

    # -- connections -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        assert self._path is not None
        # Transactions are begun explicitly (BEGIN IMMEDIATE for writes), never implicitly by sqlite3;
        # a lone read is its own transaction. ``timeout`` is SQLite's busy timeout.
        db = sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            # Switching the journal mode needs the write lock, so only switch when the file is not WAL.
            (mode,) = db.execute("PRAGMA journal_mode").fetchone()
            if mode != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            # NORMAL is SQLite's advice for WAL: never corrupts, and a commit survives the process
            # crashing, but the last commits may be lost if the machine loses power. It spares an fsync
            # per append (several times the throughput). FULL is there for power-loss durability.
            db.execute(f"PRAGMA synchronous = {self._sqlite_synchronous}")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _connection_of_memory(self) -> sqlite3.Connection:
        """The one connection of an in-memory store (the caller holds ``_pool_lock``)."""
        if self._memory is None:
            self._memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        return self._memory

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read connection: an idle one of the pool, or a new one, returned to the pool after."""
        with self._pool_lock:
            db: sqlite3.Connection | None
            if self._path is None:
                db = self._connection_of_memory()
                pooled = False
            else:
                db = self._idle.pop() if self._idle else None
                pooled = True
        if db is None:
            db = self._connect()
        try:
            yield db
        finally:
            if pooled:
                with self._pool_lock:
                    keep = len(self._idle) < _MAX_IDLE_READERS
                    if keep:
                        self._idle.append(db)
                if not keep:
                    db.close()

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._reader() as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc, "the database") from None

    def _fetch_text(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._reader() as db:
                try:
                    return db.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:
                    if "decode" not in str(exc):
                        raise
                # Only after a failure: a Python text factory costs on every value read.
                db.text_factory = _lenient_text
                try:
                    return db.execute(sql, params).fetchall()
                finally:
                    db.text_factory = str
        except sqlite3.Error as exc:
            raise self._read_error(exc, "the database") from None

    def _chain_rows(self, after: tuple[Any, Any], limit: int) -> list[tuple[Any, ...]]:
        sid, mark = after[0], "?"
        if isinstance(sid, str) and not sid.isascii():
            try:
                sid.encode("utf-8")
            except UnicodeEncodeError:
                # Text that was not UTF-8, as read: bound as its bytes, compared as the text it is.
                sid, mark = sid.encode("utf-8", "surrogateescape"), "CAST(? AS TEXT)"
        sql = READ_CHAIN_ROWS.format(columns=self._CHAIN_COLUMNS, mark=mark)
        return self._fetch_text(sql, (sid, after[1], limit))

    def _read_error(self, exc: sqlite3.Error, what: str) -> StoreError:
        if _schema_missing(exc):
            return StoreError(f"{MISSING_SCHEMA} ({exc})")
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            return DatabaseLocked(
                f"the SQLite database {self._path!r} is held by another writer for more than "
                f"{self._busy_timeout:g}s; retry, or stop the other process"
            )
        return StoreError(f"database error reading {what}: {exc}")

    def _time_out(self, value: Any) -> datetime:
        return _parse_time(value)

    def _time_in(self, value: datetime) -> Any:
        return _text_time(value)

    # -- writes ------------------------------------------------------------------------------------

    @contextmanager
    def _write(
        self, stream_id: str, expected_version: int, projection: Projection | None
    ) -> Iterator[sqlite3.Connection]:
        """A BEGIN IMMEDIATE transaction: takes the one write lock up front, waiting busy_timeout.

        SQLite has one writer at a time anyway, so the threads of this process share one write
        connection behind a lock: they queue without the busy handler's sleeps, and no pool checkout is
        paid per append. Other processes are kept out by BEGIN IMMEDIATE.
        """
        if not self._write_lock.acquire(timeout=self._busy_timeout):
            raise DatabaseLocked(
                f"writing {stream_id!r}: another thread of this process held the SQLite write lock for "
                f"more than {self._busy_timeout:g}s"
            )
        try:
            if self._writer is None:
                if self._path is None:
                    with self._pool_lock:
                        self._writer = self._connection_of_memory()
                else:
                    self._writer = self._connect()
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._locked(stream_id, exc) from None
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            if "sandboxes.conversation_id" in str(exc):
                raise live_conflict(stream_id, expected_version, projection) from None
            if "events.stream_id, events.version" in str(exc):
                raise ConcurrencyError(stream_id, expected_version) from None
            raise StoreError(f"writing {stream_id!r} failed: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise self._locked(stream_id, exc) from None
        except sqlite3.Error as exc:
            raise StoreError(f"writing {stream_id!r} failed: {exc}") from None
        finally:
            self._write_lock.release()

    def _locked(self, stream_id: str, exc: sqlite3.OperationalError) -> StoreError:
        if "locked" in str(exc) or "busy" in str(exc):
            return DatabaseLocked(
                f"writing {stream_id!r}: the SQLite database {self._path!r} is held by "
                f"another writer for more than {self._busy_timeout:g}s; retry, or stop the other process "
                "(SQLite allows one writer at a time; use Postgres for many)"
            )
        if _schema_missing(exc):
            return StoreError(f"{MISSING_SCHEMA} ({exc})")
        return StoreError(f"writing {stream_id!r} failed: {exc}")

    def _append(
        self,
        stream_id: str,
        expected_version: int,
        new_events: Sequence[NewEvent],
        key: str | None,
        projection: Projection | None,
        capacity: Sequence[CapacityLimit] = (),
        unleased_at: datetime | None = None,
    ) -> AppendResult:
        with self._write(stream_id, expected_version, projection) as db:
            # Under BEGIN IMMEDIATE nobody else writes, so these checks stay true until COMMIT.
            if key is not None and db.execute(_FIND_KEY, (stream_id, key)).fetchone():
                version, position = db.execute(SELECT_DUPLICATE, (len(new_events), stream_id, key)).fetchone()
                return AppendResult(stream_id, version, position, duplicate=True)
            for limit in capacity:
                (others,) = db.execute(*capacity_count_sql(limit, stream_id, "?")).fetchone()
                if (refused := capacity_refusal(stream_id, limit, others)) is not None:
                    raise refused
            if unleased_at is not None:
                (held,) = db.execute(LEASES_HELD, (stream_id, _text_time(unleased_at))).fetchone()
                if (leased := lease_refusal(stream_id, held)) is not None:
                    raise leased
            # The chain (orjson, hashlib) loads with the first append: `ls` and `show` never need it.
            from sandbox_lifecycle.events import chain

            hashes = chain.hashes(
                self._previous_hash(db, stream_id, expected_version), stream_id, expected_version, new_events
            )
            head = db.execute(_LOG_HEAD).fetchone()
            if head is None:
                raise StoreError(LOG_HEAD_MISSING)
            last_position, log_hash = head[0] or 0, head[1]
            for i, (e, h) in enumerate(zip(new_events, hashes, strict=True), start=1):
                position = last_position + i
                log_hash = chain.log_link(log_hash, position, h, key if i == 1 else None)
                values = (
                    stream_id,
                    expected_version + i,
                    e.type,
                    e.schema_version,
                    _json_text(e.data),
                    _json_text(e.metadata),
                    _text_time(e.occurred_at),
                    key if i == 1 else None,
                    h,
                    position,
                    log_hash,
                )
                if i > 1:
                    db.execute(_INSERT_EVENT, values)
                    continue
                cursor = db.execute(_INSERT_FIRST_EVENT, (*values, stream_id, expected_version))
                if cursor.rowcount == 0:
                    (current,) = db.execute(_CURRENT_VERSION, (stream_id,)).fetchone()
                    raise ConcurrencyError(stream_id, expected_version, f"it is at version {current or 0}")
            db.execute(_MOVE_HEAD, (position, log_hash))
            if projection is not None:
                self._write_rows(db, projection)
        version = expected_version + len(new_events)
        if len(self._heads) >= _MAX_HEADS:
            self._heads.clear()
        self._heads[stream_id] = (version, hashes[-1])
        return AppendResult(stream_id, version, position)

    def _previous_hash(self, db: sqlite3.Connection, stream_id: str, expected_version: int) -> str | None:
        """The hash the first new event chains to: the one at ``expected_version`` (None before 1)."""
        if expected_version == 0:
            return None
        head = self._heads.get(stream_id)
        if head is not None and head[0] == expected_version:
            return head[1]
        # Not remembered, or the stream is not where we left it: read it in the write transaction. A
        # stream that is not at expected_version has its first insert refused below anyway.
        row = db.execute(_PREVIOUS_HASH, (stream_id, expected_version)).fetchone()
        return None if row is None else cast(str | None, row[0])

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
        # BEGIN IMMEDIATE already excludes every other writer: the count is the append's own check.
        return self._append(stream_id, expected_version, new_events, key, projection, capacity, unleased_at)

    def _write_leases(self, statements: Sequence[tuple[str, tuple[Any, ...]]], what: str) -> int:
        count = 0
        with self._write(what, 0, None) as db:
            for sql, params in statements:
                count = db.execute(sql, params).rowcount
        return count

    def _write_projection(self, projection: Projection) -> None:
        row = projection.row
        with self._write(row.id, row.version, projection) as db:
            self._write_rows(db, projection)

    def _write_rows(self, db: sqlite3.Connection, projection: Projection) -> None:
        row = projection.row
        db.execute(_UPSERT_SANDBOX, row_values(row, _text_time))
        db.execute(_DELETE_DEADLINES, (row.id,))
        db.executemany(INSERT_DEADLINE, [deadline_values(d, _text_time) for d in projection.deadlines])

    def replace_all_projections(self, projections: Iterable[Projection]) -> None:
        iterator = iter(projections)
        with self._write("every sandbox", 0, None) as db:
            db.execute("DELETE FROM sandbox_deadlines")
            db.execute("DELETE FROM sandboxes")
            while chunk := list(islice(iterator, REPLACE_CHUNK)):
                db.executemany(INSERT_SANDBOX, [row_values(p.row, _text_time) for p in chunk])
                db.executemany(
                    INSERT_DEADLINE, [deadline_values(d, _text_time) for p in chunk for d in p.deadlines]
                )

    # -- event reads -------------------------------------------------------------------------------

    def _event_rows(self, sql: str, params: tuple[Any, ...], what: str) -> list[RecordedEvent]:
        """Events straight from sqlite3: the feed and the streams are read a million rows at a time
        (replay, rebuilds, tailing), so this skips SQLAlchemy's per-row result processing; records
        are built with tuple.__new__ (bench/rebuild_bench.py)."""
        try:
            with self._reader() as db:
                rows = db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc, what) from None
        # Imported here: orjson loads uuid and platform, which `ls` and `show` do not need.
        import orjson

        new, record, loads, parse = tuple.__new__, RecordedEvent, orjson.loads, datetime.fromisoformat
        try:
            # ``for d, m in (...,)`` is an assignment (no loop), and unpacks exactly two values: data
            # holding two JSON values ("{...}, {...}") cannot shift the metadata into another field.
            return [
                new(record, (p, s, v, t, sv, d, m, parse(o)))
                for p, s, v, t, sv, dm, o in rows
                for d, m in (loads(dm),)
            ]
        except (ValueError, TypeError):  # orjson.JSONDecodeError is a ValueError
            pass
        for _p, s, v, _t, _sv, dm, o in rows:
            if (detail := first_problem(_checks(dm, o))) is not None:
                raise CorruptStream(s, v, detail)
        raise AssertionError("a page failed to build, its rows did not")  # pragma: no cover
