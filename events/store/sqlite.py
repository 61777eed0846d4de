"""The event store on SQLite: WAL, one writer (``BEGIN IMMEDIATE``), sqlite3 for writes and event reads.

Commit order, which a reader tailing ``read_all`` relies on, comes from SQLite's single writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import PoolProxiedConnection, StaticPool

from sandbox_lifecycle.events import chain
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
    MISSING_SCHEMA,
    SANDBOX_COLUMNS,
    SELECT_DUPLICATE,
    SqlEventStore,
    capacity_count_sql,
    capacity_refusal,
    first_problem,
    live_conflict,
)
from sandbox_lifecycle.events.tables import events, metadata

_UPSERT_SANDBOX = (
    f"INSERT INTO sandboxes ({', '.join(SANDBOX_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in SANDBOX_COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in SANDBOX_COLUMNS if c != "id")
)
_DELETE_DEADLINES = "DELETE FROM sandbox_deadlines WHERE sandbox_id = ?"
_INSERT_DEADLINE = "INSERT INTO sandbox_deadlines (sandbox_id, kind, due_at, version) VALUES (?, ?, ?, ?)"
_CURRENT_VERSION = "SELECT max(version) FROM events WHERE stream_id = ?"
_FIND_KEY = "SELECT 1 FROM events WHERE stream_id = ? AND idempotency_key = ?"
_INSERT_EVENT = (
    "INSERT INTO events "
    "(stream_id, version, type, schema_version, data, meta, occurred_at, idempotency_key, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The version check and the first insert in one statement: inserts nothing when the stream moved on.
_INSERT_FIRST_EVENT = (
    "INSERT INTO events "
    "(stream_id, version, type, schema_version, data, meta, occurred_at, idempotency_key, hash) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? "
    "WHERE coalesce((SELECT max(version) FROM events WHERE stream_id = ?), 0) = ?"
)
_PREVIOUS_HASH = "SELECT hash FROM events WHERE stream_id = ? AND version = ?"
# Streams whose last hash this process remembers; past this many the memory starts over.
_MAX_HEADS = 10_000


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _schema_missing(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)


def _checks(dm: str, occurred_at: str) -> list[tuple[str, Callable[[], object]]]:
    def two_values() -> None:
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

    def _validate_options(self) -> None:
        if self._sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"sqlite_synchronous must be NORMAL or FULL, not {self._sqlite_synchronous!r}")

    def _connect_args(self) -> dict[str, Any]:
        return {"check_same_thread": False, "timeout": self._busy_timeout}

    def _setup(self) -> None:
        engine = self._engine
        sa.event.listen(engine, "connect", self._configure)
        # Connections pooled before the listener was added would miss the pragmas.
        engine.dispose(close=False)
        self._write_lock = threading.Lock()
        self._writer: PoolProxiedConnection | None = None
        # stream id -> (version, hash) of the last event this process appended to it. An event is
        # immutable once committed, so the hash of (stream, expected_version) read from here is the one
        # in the database whoever appended since: the chain costs no extra read on the hot path.
        self._heads: dict[str, tuple[int, str]] = {}
        # Times are written with the processor SQLAlchemy binds them with (the dialect's DATETIME,
        # always with microseconds), so stored text and bound parameters compare exactly. The type's
        # own processor left sqlite3's adapter to format them, which drops ".000000" from a whole
        # second: that text sorts before the bound form of the same instant, so "due at exactly now"
        # could not tell < from <=. Older rows in the short form still compare right under <=, and
        # every append rewrites its sandbox's rows, so no migration is needed.
        dialect_time = events.c.occurred_at.type.dialect_impl(engine.dialect)
        self._time = cast(Callable[[datetime], str], dialect_time.bind_processor(engine.dialect))
        # Event data and metadata are written by orjson (what reads them back), not by SQLAlchemy's
        # json.dumps: several times cheaper, which pays for the hash chain's own encoding and digest.
        self._json = _json_text

    @classmethod
    def scratch(cls) -> SqliteEventStore:
        engine = sa.create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
        store = cls(engine)
        store._owns_engine = True
        metadata.create_all(engine)
        return store

    def _close_writer(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _configure(self, dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Transactions are begun explicitly (BEGIN IMMEDIATE for writes), never implicitly by sqlite3.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        # Switching the journal mode needs the write lock, so only switch when the file is not WAL yet.
        (mode,) = dbapi_connection.execute("PRAGMA journal_mode").fetchone()
        if mode != "wal":
            dbapi_connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL is SQLite's advice for WAL: never corrupts, and a commit survives the process crashing,
        # but the last commits may be lost if the machine loses power. It spares an fsync per append
        # (several times the throughput). FULL is there for whoever needs power-loss durability.
        dbapi_connection.execute(f"PRAGMA synchronous = {self._sqlite_synchronous}")

    def _begin_replace(self, conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _driver_error(self, exc: BaseException) -> StoreError | None:
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc)
            if "locked" in message or "busy" in message:
                return DatabaseLocked(
                    f"the SQLite database {self._engine.url.database!r} is held by another writer for more "
                    f"than {self._busy_timeout:g}s; retry, or stop the other process"
                )
        if _schema_missing(exc):
            return StoreError(f"{MISSING_SCHEMA} ({exc})")
        return None

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
                self._writer = self._engine.raw_connection()
            db = cast(sqlite3.Connection, self._writer.driver_connection)
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
            if "sandbox_lifecycle.events.stream_id" in str(exc):
                raise ConcurrencyError(stream_id, expected_version) from None
            raise StoreError(f"writing {stream_id!r} failed: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise self._locked(stream_id, exc) from None
        except sqlite3.Error as exc:
            raise StoreError(f"writing {stream_id!r} failed: {exc}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None
        finally:
            self._write_lock.release()

    def _locked(self, stream_id: str, exc: sqlite3.OperationalError) -> StoreError:
        if "locked" in str(exc) or "busy" in str(exc):
            return DatabaseLocked(
                f"writing {stream_id!r}: the SQLite database {self._engine.url.database!r} is held by "
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
            position = 0
            hashes = chain.hashes(
                self._previous_hash(db, stream_id, expected_version), stream_id, expected_version, new_events
            )
            for i, (e, h) in enumerate(zip(new_events, hashes, strict=True), start=1):
                values = (
                    stream_id,
                    expected_version + i,
                    e.type,
                    e.schema_version,
                    self._json(e.data),
                    self._json(e.metadata),
                    self._time(e.occurred_at),
                    key if i == 1 else None,
                    h,
                )
                if i > 1:
                    position = cast(int, db.execute(_INSERT_EVENT, values).lastrowid)
                    continue
                cursor = db.execute(_INSERT_FIRST_EVENT, (*values, stream_id, expected_version))
                if cursor.rowcount == 0:
                    (current,) = db.execute(_CURRENT_VERSION, (stream_id,)).fetchone()
                    raise ConcurrencyError(stream_id, expected_version, f"it is at version {current or 0}")
                position = cast(int, cursor.lastrowid)
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
    ) -> AppendResult:
        # BEGIN IMMEDIATE already excludes every other writer: the count is the append's own check.
        return self._append(stream_id, expected_version, new_events, key, projection, capacity)

    def _write_projection(self, projection: Projection) -> None:
        row = projection.row
        with self._write(row.id, row.version, projection) as db:
            self._write_rows(db, projection)

    def _write_rows(self, db: sqlite3.Connection, projection: Projection) -> None:
        row = projection.row
        db.execute(
            _UPSERT_SANDBOX,
            tuple(
                self._time(value) if isinstance(value, datetime) else value
                for value in (getattr(row, name) for name in SANDBOX_COLUMNS)
            ),
        )
        db.execute(_DELETE_DEADLINES, (row.id,))
        db.executemany(
            _INSERT_DEADLINE,
            [(d.sandbox_id, d.kind, self._time(d.due_at), d.version) for d in projection.deadlines],
        )

    # -- event reads -------------------------------------------------------------------------------

    def _event_rows(self, sql: str, params: tuple[Any, ...], what: str) -> list[RecordedEvent]:
        """Events straight from sqlite3: the feed and the streams are read a million rows at a time
        (replay, rebuilds, tailing), so this skips SQLAlchemy's per-row result processing; records
        are built with tuple.__new__ (bench/rebuild_bench.py)."""
        try:
            raw: PoolProxiedConnection = self._engine.raw_connection()
            try:
                rows = cast(sqlite3.Connection, raw.driver_connection).execute(sql, params).fetchall()
            finally:
                raw.close()
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None
        except sqlite3.Error as exc:
            if _schema_missing(exc):
                raise StoreError(f"{MISSING_SCHEMA} ({exc})") from None
            raise StoreError(f"database error reading {what}: {exc}") from None
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
