"""The event store: an append-only log plus the read models written in the same transaction.

One class serves both backends. Schema and reads go through SQLAlchemy Core; writes talk to the driver
directly (one psycopg statement per append on Postgres, sqlite3 on SQLite) because that is the one place
where per-statement overhead and round trips bound throughput.

Commit order, which a reader tailing ``read_all`` relies on: on Postgres every append serialises on one
advisory lock held until commit (see ``_PG_LOCK``); SQLite has a single writer (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal, cast

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb, set_json_loads
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.pool import PoolProxiedConnection, StaticPool

from sandbox_lifecycle.events.records import (
    AppendResult,
    ConcurrencyError,
    DatabaseLocked,
    Deadline,
    NewEvent,
    Projection,
    RecordedEvent,
    SandboxRow,
    StoreError,
)
from sandbox_lifecycle.events.tables import (
    EXPIRED_STATE,
    UQ_LIVE_CONVERSATION,
    UQ_STREAM_IDEMPOTENCY_KEY,
    UQ_STREAM_VERSION,
    events,
    metadata,
    sandbox_deadlines,
    sandboxes,
)

DEFAULT_BUSY_TIMEOUT = 5.0
# How long a Postgres append waits for the append lock (see _PG_LOCK) before giving up with
# DatabaseLocked: a writer that holds it longer is stuck (e.g. an idle-in-transaction session), not busy.
DEFAULT_LOCK_TIMEOUT = 10.0
_REPLACE_CHUNK = 1000

_SANDBOX_COLUMNS = tuple(c.name for c in sandboxes.columns)

# The SQLite projection writes (Postgres folds them into its single statement, see _pg_write_sql).
_UPSERT_SANDBOX = (
    f"INSERT INTO sandboxes ({', '.join(_SANDBOX_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _SANDBOX_COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SANDBOX_COLUMNS if c != "id")
)
_DELETE_DEADLINES = "DELETE FROM sandbox_deadlines WHERE sandbox_id = ?"
_INSERT_DEADLINE = "INSERT INTO sandbox_deadlines (sandbox_id, kind, due_at, version) VALUES (?, ?, ?, ?)"
# The last event of the batch that first used the key: what the retried append would have returned.
_SELECT_DUPLICATE = (
    "SELECT e.version, e.position FROM events AS k "
    "JOIN events AS e ON e.stream_id = k.stream_id AND e.version >= k.version AND e.version < k.version + ? "
    "WHERE k.stream_id = ? AND k.idempotency_key = ? ORDER BY e.version DESC LIMIT 1"
)
_PG_SELECT_DUPLICATE = _SELECT_DUPLICATE.replace("?", "%s")


# Postgres writes are ONE statement each, run in autocommit: no BEGIN/COMMIT messages, one round trip,
# and far less client CPU than a psycopg pipeline of several statements (measured: ~70 us against ~240 us
# per append), which is what bounds throughput once the commit's WAL flush is paid.
#
# Commit order: the statement first takes a transaction-level advisory lock that every append takes, and
# holds it until its commit; the position (identity, CACHE 1) is drawn only in rows produced after the
# lock is granted. So positions become visible in increasing order and a reader tailing
# ``position > last_seen`` never skips an event that commits late. Unlike ``LOCK TABLE ... EXCLUSIVE``
# (eventsourcing's way), an advisory lock can be taken inside a single statement; it serialises only
# the writers that take it, and every writer of ``events`` is this store. Plain SELECTs never wait.
#
# The statement's snapshot predates the lock, so the version check below may miss an append that
# committed while we waited; that append holds version expected+1 already, and the unique
# (stream_id, version) constraint, which checks against committed rows and not the snapshot, refuses ours.
# A stale ``expected_version`` makes ``version`` NULL and the NOT NULL constraint aborts the statement
# (with everything else in it, projection included): a conflict is an error, not an empty result.
#
# Every other row the statement writes is produced FROM the lock, so no row lock is ever held while
# waiting for the advisory lock (that order could deadlock two appends to the same sandbox).
# Keyed by ("SBXE" in ASCII, the events table's oid): apart from other applications' advisory locks, and
# per schema, so stores in different schemas of one database do not wait for each other.
_PG_LOCK = "SELECT pg_advisory_xact_lock(1396857925, 'events'::regclass::integer)"
_PG_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_PG_CAST = {
    c.name: c.type.compile(dialect=_PG_DIALECT) for c in (*sandboxes.columns, *sandbox_deadlines.columns)
}


@functools.lru_cache(maxsize=256)
def _pg_write_sql(n_events: int, n_deadlines: int | None) -> str:
    """The write statement for ``n_events`` events and a projection with ``n_deadlines`` (None: none)."""
    ctes: list[str] = []
    gate = ""
    if n_events:
        gate = " FROM lock"
        ctes.append(f"lock AS MATERIALIZED ({_PG_LOCK})")
        rows = ", ".join(
            f"(%(type{i})s::text, %(schema_version{i})s::integer, %(data{i})s::jsonb, %(meta{i})s::jsonb, "
            f"%(occurred_at{i})s::timestamptz, {i + 1})"
            for i in range(n_events)
        )
        ctes.append(
            "ins AS (INSERT INTO events "
            "(stream_id, version, type, schema_version, data, meta, occurred_at, idempotency_key) "
            "SELECT %(stream_id)s::text, "
            "CASE WHEN coalesce((SELECT max(version) FROM events WHERE stream_id = %(stream_id)s::text), 0) "
            "= %(expected)s::bigint THEN %(expected)s::bigint + u.ord END, "
            "u.type, u.schema_version, u.data, u.meta, u.occurred_at, "
            "CASE WHEN u.ord = 1 THEN %(key)s::text END "
            f"FROM lock, (VALUES {rows}) AS u(type, schema_version, data, meta, occurred_at, ord) "
            "ORDER BY u.ord RETURNING position)"
        )
    if n_deadlines is not None:
        values = ", ".join(f"%(r_{c})s::{_PG_CAST[c]}" for c in _SANDBOX_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _SANDBOX_COLUMNS if c != "id")
        ctes.append(
            f"sbx AS (INSERT INTO sandboxes ({', '.join(_SANDBOX_COLUMNS)}) SELECT {values}{gate} "
            f"ON CONFLICT (id) DO UPDATE SET {updates})"
        )
        kept = ", ".join(f"%(dl_kind{i})s::text" for i in range(n_deadlines))
        ctes.append(
            f"gone AS (DELETE FROM sandbox_deadlines{' USING lock' if gate else ''} "
            f"WHERE sandbox_id = %(r_id)s::text{f' AND kind NOT IN ({kept})' if n_deadlines else ''})"
        )
        if n_deadlines:
            dl_rows = ", ".join(
                f"(%(r_id)s::text, %(dl_kind{i})s::text, %(dl_due_at{i})s::timestamptz, "
                f"%(dl_version{i})s::bigint)"
                for i in range(n_deadlines)
            )
            ctes.append(
                "dls AS (INSERT INTO sandbox_deadlines (sandbox_id, kind, due_at, version) "
                f"SELECT d.*{gate + ',' if gate else ' FROM'} (VALUES {dl_rows}) AS d "
                "ON CONFLICT (sandbox_id, kind) "
                "DO UPDATE SET due_at = excluded.due_at, version = excluded.version)"
            )
    return "WITH " + ", ".join(ctes) + (" SELECT max(position) FROM ins" if n_events else " SELECT 1")


# The bulk reads skip SQLAlchemy's per-row result processing (see _records), and get the payload and
# metadata as ONE JSON text, parsed by a single orjson call: on Postgres psycopg's per-value JSONB loader
# is a Python call each, the largest part of reading a row (measured ~1.7 against ~2.5 us per event); on
# SQLite it spares a column and a parse. SQLite's naive UTC text gets its offset in SQL, so parsing it
# yields the UTC singleton directly (several times cheaper than parsing, then .replace(tzinfo=UTC)).
_EVENT_COLUMNS = {
    "sqlite": "position, stream_id, version, type, schema_version, '[' || data || ',' || meta || ']', "
    "occurred_at || '+00:00'",
    "postgresql": "position, stream_id, version, type, schema_version, json_build_array(data, meta)::text, "
    "occurred_at",
}
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
_POSITION_BOUNDS = "SELECT min(position), max(position) FROM events"
# Stream ids of sampled events (by position), in the database's own order of stream ids: the ranges
# cut at their quantiles hold about equal numbers of events. Ids are never compared in Python, whose
# order may differ from the database collation.
_SAMPLE_STREAMS = "SELECT stream_id FROM events WHERE position IN ({marks}) ORDER BY stream_id"
# How many events are sampled per part when splitting the streams.
_SAMPLES_PER_PART = 64
_SQLITE_CURRENT_VERSION = "SELECT max(version) FROM events WHERE stream_id = ?"
_SQLITE_FIND_KEY = "SELECT 1 FROM events WHERE stream_id = ? AND idempotency_key = ?"
_SQLITE_INSERT_EVENT = (
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at, idempotency_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The version check and the first insert in one statement: inserts nothing when the stream moved on.
_SQLITE_INSERT_FIRST_EVENT = (
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, occurred_at, idempotency_key) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ? "
    "WHERE coalesce((SELECT max(version) FROM events WHERE stream_id = ?), 0) = ?"
)


_MISSING_SCHEMA = "the event store schema is missing; run `sandboxctl db upgrade`"


def _schema_missing(exc: BaseException) -> bool:
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the event log stores aware UTC datetimes only")
    return value.astimezone(UTC)


def _check(projection: Projection) -> None:
    # Deadlines are replaced per sandbox: one of another sandbox would silently survive its replacement.
    for d in projection.deadlines:
        if d.sandbox_id != projection.row.id:
            raise ValueError(f"deadline of {d.sandbox_id!r} in the projection of {projection.row.id!r}")


def _live_conflict(stream_id: str, expected_version: int, projection: Projection | None) -> ConcurrencyError:
    detail = "the conversation already has a live sandbox of this kind"
    if projection is not None:
        row = projection.row
        detail = f"conversation {row.conversation_id!r} already has a live {row.kind!r} sandbox"
    return ConcurrencyError(stream_id, expected_version, detail)


def _sandbox(row: Row[Any]) -> SandboxRow:
    return SandboxRow(**{name: getattr(row, name) for name in _SANDBOX_COLUMNS})


def _deadline(row: Row[Any]) -> Deadline:
    return Deadline(sandbox_id=row.sandbox_id, kind=row.kind, due_at=row.due_at, version=row.version)


class SqlEventStore:
    """The EventStore port on SQLAlchemy: ``sqlite:///path`` (embedded) or ``postgresql+psycopg://``.

    Thread-safe; one instance per process is enough. The schema must exist already (``events.migrate``).
    """

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        if sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"sqlite_synchronous must be NORMAL or FULL, not {sqlite_synchronous!r}")
        self._owns_engine = isinstance(url_or_engine, str)
        self._busy_timeout = busy_timeout
        self._sqlite_synchronous = sqlite_synchronous
        if isinstance(url_or_engine, str):
            url = sa.make_url(url_or_engine)
            connect_args: dict[str, Any] = {}
            if url.get_backend_name() == "sqlite":
                connect_args = {"check_same_thread": False, "timeout": busy_timeout}
            engine = sa.create_engine(url, connect_args=connect_args)
        else:
            engine = url_or_engine
        self._engine = engine
        self._dialect = engine.dialect.name
        if self._dialect == "sqlite":
            sa.event.listen(engine, "connect", self._configure_sqlite)
            # Connections pooled before the listener was added would miss the pragmas.
            engine.dispose(close=False)
            self._reader = engine
            self._sqlite_write_lock = threading.Lock()
            self._sqlite_writer: PoolProxiedConnection | None = None
            self._sqlite_time = cast(
                Callable[[datetime], str], events.c.occurred_at.type.bind_processor(engine.dialect)
            )
            self._sqlite_json = cast(Callable[[Any], str], events.c.data.type.bind_processor(engine.dialect))
        elif self._dialect == "postgresql":
            if engine.dialect.driver != "psycopg":
                raise StoreError(
                    f"Postgres needs the psycopg 3 driver (postgresql+psycopg://), not {engine.url}"
                )
            self._pg_lock_timeout = f"{int(lock_timeout * 1000)}ms"
            sa.event.listen(engine, "connect", self._configure_pg)
            engine.dispose(close=False)
            # Single-statement reads need no transaction; without one, returning the connection to the
            # pool costs no ROLLBACK round trip.
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            raise StoreError(f"unsupported database {engine.url!r}: use sqlite:/// or postgresql+psycopg://")
        self._build_reads()

    @classmethod
    def scratch(cls) -> SqlEventStore:
        """A private in-memory store with the schema created, e.g. to rebuild projections and compare.

        Its one connection is shared by reads and writes: use it from one thread at a time.
        """
        engine = sa.create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
        store = cls(engine)
        store._owns_engine = True
        metadata.create_all(engine)
        return store

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        if self._dialect == "sqlite":
            with self._sqlite_write_lock:
                if self._sqlite_writer is not None:
                    self._sqlite_writer.close()
                    self._sqlite_writer = None
        if self._owns_engine:
            self._engine.dispose()

    def _configure_sqlite(self, dbapi_connection: sqlite3.Connection, _record: object) -> None:
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

    def _configure_pg(self, dbapi_connection: psycopg.Connection[Any], _record: object) -> None:
        # Bounds the wait for the append lock: a writer holding it that long is stuck, not busy.
        dbapi_connection.execute(f"SET lock_timeout = '{self._pg_lock_timeout}'")
        # Timestamps come back in UTC (no per-row conversion) and JSONB through orjson, for raw reads.
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
        set_json_loads(orjson.loads, dbapi_connection)
        dbapi_connection.commit()

    # -- writes ------------------------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        projection: Projection | None = None,
    ) -> AppendResult:
        if not events:
            raise ValueError("append needs at least one event")
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, not {expected_version}")
        if projection is not None:
            _check(projection)
        if self._dialect == "postgresql":
            return self._pg_append(stream_id, expected_version, events, idempotency_key, projection)
        return self._sqlite_append(stream_id, expected_version, events, idempotency_key, projection)

    def write_projection(self, projection: Projection) -> None:
        _check(projection)
        row = projection.row
        if self._dialect == "postgresql":
            with self._pg_autocommit() as pg:
                try:
                    pg.execute(
                        self._pg_write(0, projection), self._pg_projection_params(projection), prepare=True
                    )
                except psycopg.Error as exc:
                    raise self._pg_error(exc, row.id, row.version, projection) from None
            return
        with self._sqlite_write(row.id, row.version, projection) as db:
            self._sqlite_write_projection(db, projection)

    def replace_all_projections(self, projections: Iterable[Projection]) -> None:
        """Replace every read-model row and deadline in one transaction (``replay --rebuild``).

        Readers see the old projections until the new ones are committed.
        """
        iterator = iter(projections)
        try:
            with self._engine.connect() as conn:
                if self._dialect == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.execute(sandbox_deadlines.delete())
                conn.execute(sandboxes.delete())
                while chunk := list(islice(iterator, _REPLACE_CHUNK)):
                    conn.execute(sandboxes.insert(), [self._row_params(p.row) for p in chunk])
                    deadlines = [self._deadline_params(d) for p in chunk for d in p.deadlines]
                    if deadlines:
                        conn.execute(sandbox_deadlines.insert(), deadlines)
                conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None

    # -- Postgres append ---------------------------------------------------------------------------

    @contextmanager
    def _pg_autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled driver connection in autocommit mode, for single-statement writes."""
        try:
            raw: PoolProxiedConnection = self._engine.raw_connection()
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None
        pg = cast(psycopg.Connection[Any], raw.driver_connection)
        try:
            pg.autocommit = True
        except psycopg.Error as exc:
            raw.invalidate()
            raise StoreError(f"database connection unusable: {exc}") from None
        try:
            yield pg
        finally:
            if pg.broken or pg.closed:
                raw.invalidate()
            else:
                pg.autocommit = False
                raw.close()

    @staticmethod
    def _pg_write(n_events: int, projection: Projection | None) -> str:
        return _pg_write_sql(n_events, None if projection is None else len(projection.deadlines))

    @staticmethod
    def _pg_projection_params(projection: Projection) -> dict[str, Any]:
        row = projection.row
        params = {f"r_{name}": getattr(row, name) for name in _SANDBOX_COLUMNS}
        for i, d in enumerate(projection.deadlines):
            params[f"dl_kind{i}"] = d.kind
            params[f"dl_due_at{i}"] = _utc(d.due_at)
            params[f"dl_version{i}"] = d.version
        for name in ("last_activity_at", "state_since", "created_at"):
            if params[f"r_{name}"] is not None:
                params[f"r_{name}"] = _utc(params[f"r_{name}"])
        return params

    def _pg_append(
        self,
        stream_id: str,
        expected_version: int,
        new_events: Sequence[NewEvent],
        key: str | None,
        projection: Projection | None,
    ) -> AppendResult:
        params: dict[str, Any] = {"stream_id": stream_id, "expected": expected_version, "key": key}
        for i, e in enumerate(new_events):
            params[f"type{i}"] = e.type
            params[f"schema_version{i}"] = e.schema_version
            params[f"data{i}"] = Jsonb(e.data)
            params[f"meta{i}"] = Jsonb(e.metadata)
            params[f"occurred_at{i}"] = _utc(e.occurred_at)
        if projection is not None:
            params.update(self._pg_projection_params(projection))
        with self._pg_autocommit() as pg:
            try:
                cursor = pg.execute(self._pg_write(len(new_events), projection), params, prepare=True)
                (position,) = cast(tuple[int], cursor.fetchone())
            except psycopg.Error as exc:
                error = self._pg_error(exc, stream_id, expected_version, projection)
                if key is not None and isinstance(error, ConcurrencyError):
                    # A retried append fails like a stale one (its version is taken), so the key is
                    # looked up only after a conflict, never on the hot path.
                    try:
                        duplicate = pg.execute(
                            _PG_SELECT_DUPLICATE, (len(new_events), stream_id, key)
                        ).fetchone()
                    except psycopg.Error as lookup_exc:
                        raise StoreError(f"writing {stream_id!r} failed: {lookup_exc}") from None
                    if duplicate is not None:
                        return AppendResult(stream_id, duplicate[0], duplicate[1], duplicate=True)
                raise error from None
        return AppendResult(stream_id, expected_version + len(new_events), position)

    @staticmethod
    def _pg_error(
        exc: psycopg.Error, stream_id: str, expected_version: int, projection: Projection | None
    ) -> StoreError:
        diag = exc.diag
        if isinstance(exc, psycopg.errors.NotNullViolation) and diag.column_name == "version":
            return ConcurrencyError(stream_id, expected_version)
        if isinstance(exc, psycopg.errors.UniqueViolation):
            if diag.constraint_name == UQ_LIVE_CONVERSATION:
                return _live_conflict(stream_id, expected_version, projection)
            if diag.constraint_name in (UQ_STREAM_VERSION, UQ_STREAM_IDEMPOTENCY_KEY):
                return ConcurrencyError(stream_id, expected_version)
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return DatabaseLocked(
                f"writing {stream_id!r}: another writer held the append lock for longer than the lock "
                "timeout; look for a stuck session (idle in transaction) in pg_stat_activity"
            )
        if _schema_missing(exc):
            return StoreError(f"{_MISSING_SCHEMA} ({exc})")
        return StoreError(f"writing {stream_id!r} failed: {exc}")

    # -- SQLite append -----------------------------------------------------------------------------

    @contextmanager
    def _sqlite_write(
        self, stream_id: str, expected_version: int, projection: Projection | None
    ) -> Iterator[sqlite3.Connection]:
        """A BEGIN IMMEDIATE transaction: takes the one write lock up front, waiting busy_timeout.

        SQLite has one writer at a time anyway, so the threads of this process share one write
        connection behind a lock: they queue without the busy handler's sleeps, and no pool checkout is
        paid per append. Other processes are kept out by BEGIN IMMEDIATE.
        """
        if not self._sqlite_write_lock.acquire(timeout=self._busy_timeout):
            raise DatabaseLocked(
                f"writing {stream_id!r}: another thread of this process held the SQLite write lock for "
                f"more than {self._busy_timeout:g}s"
            )
        try:
            if self._sqlite_writer is None:
                self._sqlite_writer = self._engine.raw_connection()
            db = cast(sqlite3.Connection, self._sqlite_writer.driver_connection)
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._sqlite_locked(stream_id, exc) from None
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            if "sandboxes.conversation_id" in str(exc):
                raise _live_conflict(stream_id, expected_version, projection) from None
            if "sandbox_lifecycle.events.stream_id" in str(exc):
                raise ConcurrencyError(stream_id, expected_version) from None
            raise StoreError(f"writing {stream_id!r} failed: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise self._sqlite_locked(stream_id, exc) from None
        except sqlite3.Error as exc:
            raise StoreError(f"writing {stream_id!r} failed: {exc}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None
        finally:
            self._sqlite_write_lock.release()

    def _sqlite_locked(self, stream_id: str, exc: sqlite3.OperationalError) -> StoreError:
        if "locked" in str(exc) or "busy" in str(exc):
            return DatabaseLocked(
                f"writing {stream_id!r}: the SQLite database {self._engine.url.database!r} is held by "
                f"another writer for more than {self._busy_timeout:g}s; retry, or stop the other process "
                "(SQLite allows one writer at a time; use Postgres for many)"
            )
        if _schema_missing(exc):
            return StoreError(f"{_MISSING_SCHEMA} ({exc})")
        return StoreError(f"writing {stream_id!r} failed: {exc}")

    def _sqlite_append(
        self,
        stream_id: str,
        expected_version: int,
        new_events: Sequence[NewEvent],
        key: str | None,
        projection: Projection | None,
    ) -> AppendResult:
        with self._sqlite_write(stream_id, expected_version, projection) as db:
            # Under BEGIN IMMEDIATE nobody else writes, so these checks stay true until COMMIT.
            if key is not None and db.execute(_SQLITE_FIND_KEY, (stream_id, key)).fetchone():
                version, position = db.execute(
                    _SELECT_DUPLICATE, (len(new_events), stream_id, key)
                ).fetchone()
                return AppendResult(stream_id, version, position, duplicate=True)
            position = 0
            for i, e in enumerate(new_events, start=1):
                values = (
                    stream_id,
                    expected_version + i,
                    e.type,
                    e.schema_version,
                    self._sqlite_json(e.data),
                    self._sqlite_json(e.metadata),
                    self._sqlite_time(e.occurred_at),
                    key if i == 1 else None,
                )
                if i > 1:
                    position = cast(int, db.execute(_SQLITE_INSERT_EVENT, values).lastrowid)
                    continue
                cursor = db.execute(_SQLITE_INSERT_FIRST_EVENT, (*values, stream_id, expected_version))
                if cursor.rowcount == 0:
                    (current,) = db.execute(_SQLITE_CURRENT_VERSION, (stream_id,)).fetchone()
                    raise ConcurrencyError(stream_id, expected_version, f"it is at version {current or 0}")
                position = cast(int, cursor.lastrowid)
            if projection is not None:
                self._sqlite_write_projection(db, projection)
        return AppendResult(stream_id, expected_version + len(new_events), position)

    def _sqlite_write_projection(self, db: sqlite3.Connection, projection: Projection) -> None:
        row = projection.row
        db.execute(
            _UPSERT_SANDBOX,
            tuple(
                self._sqlite_time(value) if isinstance(value, datetime) else value
                for value in (getattr(row, name) for name in _SANDBOX_COLUMNS)
            ),
        )
        db.execute(_DELETE_DEADLINES, (row.id,))
        db.executemany(
            _INSERT_DEADLINE,
            [(d.sandbox_id, d.kind, self._sqlite_time(d.due_at), d.version) for d in projection.deadlines],
        )

    @staticmethod
    def _row_params(row: SandboxRow) -> dict[str, Any]:
        return {name: getattr(row, name) for name in _SANDBOX_COLUMNS}

    @staticmethod
    def _deadline_params(d: Deadline) -> dict[str, Any]:
        return {"sandbox_id": d.sandbox_id, "kind": d.kind, "due_at": d.due_at, "version": d.version}

    # -- reads -------------------------------------------------------------------------------------

    def _build_reads(self) -> None:
        # Built once with bind parameters, so SQLAlchemy compiles each a single time (compiled cache).
        p = sa.bindparam
        self._q_sandbox = sa.select(sandboxes).where(sandboxes.c.id == p("id"))
        self._q_live = sa.select(sandboxes).where(
            sandboxes.c.conversation_id == p("conversation_id"),
            sandboxes.c.kind == p("kind"),
            # A literal, so Postgres can prove the partial unique index's predicate and use it.
            sandboxes.c.state != sa.literal_column(f"'{EXPIRED_STATE}'"),
        )
        self._q_sandboxes = sa.select(sandboxes).order_by(sandboxes.c.created_at, sandboxes.c.id)
        self._q_sandboxes_in = self._q_sandboxes.where(sandboxes.c.state == p("state"))
        ordered = (sandbox_deadlines.c.due_at, sandbox_deadlines.c.sandbox_id, sandbox_deadlines.c.kind)
        self._q_due = (
            sa.select(sandbox_deadlines)
            .where(sandbox_deadlines.c.due_at <= p("now", type_=sandbox_deadlines.c.due_at.type))
            .order_by(*ordered)
            .limit(p("limit"))
        )
        self._q_next = sa.select(sa.func.min(sandbox_deadlines.c.due_at))
        self._q_deadlines = sa.select(sandbox_deadlines).order_by(*ordered)
        self._q_stream_ids = sa.select(events.c.stream_id).distinct().order_by(events.c.stream_id)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._reader.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None

    def _sa_error(self, exc: sa.exc.SQLAlchemyError) -> StoreError:
        if not isinstance(exc, sa.exc.DBAPIError):  # e.g. the pool timed out
            return StoreError(f"database error: {exc}")
        if self._dialect == "sqlite" and isinstance(exc.orig, sqlite3.OperationalError):
            message = str(exc.orig)
            if "locked" in message or "busy" in message:
                return DatabaseLocked(
                    f"the SQLite database {self._engine.url.database!r} is held by another writer for more "
                    f"than {self._busy_timeout:g}s; retry, or stop the other process"
                )
        if exc.orig is not None and _schema_missing(exc.orig):
            return StoreError(f"{_MISSING_SCHEMA} ({exc.orig})")
        return StoreError(f"database error: {exc.orig}")

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return self._records(_READ_STREAM, (stream_id, after_version), f"stream {stream_id!r}")

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._records(_READ_ALL, (after_position, limit), "the event feed")

    def read_streams(
        self, after: tuple[str, int] = ("", 0), before: str | None = None, limit: int = 1000
    ) -> list[RecordedEvent]:
        if before is None:
            return self._records(_READ_STREAMS, (*after, limit), "the event streams")
        return self._records(_READ_STREAMS_BEFORE, (*after, before, limit), "the event streams")

    def split_streams(self, parts: int) -> list[str]:
        if parts < 1:
            raise ValueError(f"cannot split the streams into {parts} parts")
        if parts == 1:
            return []
        with self._read() as conn:
            first, last = conn.exec_driver_sql(_POSITION_BOUNDS).one()
            if first is None:
                return []
            # Evenly spaced positions: a stream is sampled in proportion to its number of events.
            # Positions may have gaps (rolled-back appends); a missed sample only blurs a quantile.
            n = min(parts * _SAMPLES_PER_PART, last - first + 1)
            positions = sorted({first + (last - first) * i // max(n - 1, 1) for i in range(n)})
            marks = ", ".join("?" if self._dialect == "sqlite" else "%s" for _ in positions)
            sample = list(
                conn.exec_driver_sql(_SAMPLE_STREAMS.format(marks=marks), tuple(positions)).scalars()
            )
        bounds: list[str] = []
        for i in range(1, parts):
            sid = sample[len(sample) * i // parts]
            # The sample is sorted, so a repeat can only be the previous bound (one long stream).
            if sid != sample[0] and (not bounds or sid != bounds[-1]):
                bounds.append(sid)
        return bounds

    def _records(self, sql: str, params: tuple[Any, ...], what: str) -> list[RecordedEvent]:
        """Read events (``_EVENT_COLUMNS``), straight from the driver: every read of events goes here.

        The feed and the streams are read a million rows at a time (replay, rebuilds, tailing), so this
        skips SQLAlchemy's per-row result processing: JSON is parsed by orjson and records are built
        with tuple.__new__. This is what a rebuild's read costs per event (bench/rebuild_bench.py).
        """
        sql = sql.format(columns=_EVENT_COLUMNS[self._dialect])
        new, record, loads = tuple.__new__, RecordedEvent, orjson.loads
        try:
            if self._dialect == "sqlite":
                raw: PoolProxiedConnection = self._engine.raw_connection()
                try:
                    rows = cast(sqlite3.Connection, raw.driver_connection).execute(sql, params).fetchall()
                finally:
                    raw.close()
                parse = datetime.fromisoformat
                return [new(record, (p, s, v, t, sv, *loads(dm), parse(o))) for p, s, v, t, sv, dm, o in rows]
            # Autocommit: a lone SELECT needs no transaction, and so no ROLLBACK round trip after it
            # (which doubled the cost of loading one sandbox).
            with self._pg_autocommit() as pg, pg.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params, prepare=True)
                rows = cur.fetchall()
            utc = UTC
            return [
                new(record, (p, s, v, t, sv, *loads(dm), o if o.tzinfo is utc else o.astimezone(utc)))
                for p, s, v, t, sv, dm, o in rows
            ]
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None
        except (sqlite3.Error, psycopg.Error) as exc:
            if _schema_missing(exc):
                raise StoreError(f"{_MISSING_SCHEMA} ({exc})") from None
            raise StoreError(f"database error reading {what}: {exc}") from None

    def get_sandbox(self, sandbox_id: str) -> SandboxRow | None:
        with self._read() as conn:
            row = conn.execute(self._q_sandbox, {"id": sandbox_id}).first()
            return None if row is None else _sandbox(row)

    def find_live(self, conversation_id: str, kind: str) -> SandboxRow | None:
        with self._read() as conn:
            row = conn.execute(self._q_live, {"conversation_id": conversation_id, "kind": kind}).first()
            return None if row is None else _sandbox(row)

    def list_sandboxes(self, state: str | None = None) -> list[SandboxRow]:
        with self._read() as conn:
            if state is None:
                rows = conn.execute(self._q_sandboxes)
            else:
                rows = conn.execute(self._q_sandboxes_in, {"state": state})
            return [_sandbox(r) for r in rows]

    def due_deadlines(self, now: datetime, limit: int = 1000) -> list[Deadline]:
        with self._read() as conn:
            return [_deadline(r) for r in conn.execute(self._q_due, {"now": now, "limit": limit})]

    def next_deadline(self) -> datetime | None:
        with self._read() as conn:
            return cast(datetime | None, conn.execute(self._q_next).scalar())

    def all_deadlines(self) -> list[Deadline]:
        with self._read() as conn:
            return [_deadline(r) for r in conn.execute(self._q_deadlines)]

    def stream_ids(self) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(self._q_stream_ids).scalars())
