"""The event store on PostgreSQL: one psycopg statement per append, serialised by an advisory lock.

The only module of the store that imports psycopg (the ``postgres`` extra).

Commit order, which a reader tailing ``read_all`` relies on: every append serialises on one advisory
lock held until commit (see ``PG_LOCK``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from typing import Any, ClassVar, cast

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

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
    DEADLINE_COLUMNS,
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
    lease_refusal,
    live_conflict,
    row_values,
    utc,
)
from sandbox_lifecycle.events.tables import (
    UQ_LIVE_CONVERSATION,
    UQ_STREAM_IDEMPOTENCY_KEY,
    UQ_STREAM_VERSION,
    sandbox_deadlines,
    sandboxes,
)

_SELECT_DUPLICATE = SELECT_DUPLICATE.replace("?", "%s")
_LEASES_HELD = LEASES_HELD.replace("?", "%s")

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
PG_LOCK = "SELECT pg_advisory_xact_lock(1396857925, 'events'::regclass::integer)"
_PG_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_PG_CAST = {
    c.name: c.type.compile(dialect=_PG_DIALECT) for c in (*sandboxes.columns, *sandbox_deadlines.columns)
}


@functools.lru_cache(maxsize=256)
def _write_sql(n_events: int, n_deadlines: int | None, hashed: bool = False) -> str:
    """The write statement for ``n_events`` events and a projection with ``n_deadlines`` (None: none).

    ``hashed``: the events' chain hashes come as parameters, computed by the client from the stream's
    head it remembers; otherwise the statement computes them from the stored previous hash."""
    ctes: list[str] = []
    gate = ""
    if n_events:
        # Every other row is written FROM the head row's update: after the lock, and not at all when
        # the row is gone (then nothing is written and the append reports it).
        gate = " FROM head"
        ctes.append(f"lock AS MATERIALIZED ({PG_LOCK})")
        # Positions drawn after the lock, in order (volatile calls run after the ORDER BY): the log hash
        # covers each event's position, so it is chosen before the insert, from the column's own sequence.
        ctes.append(
            "pos AS MATERIALIZED (SELECT o AS ord, nextval(pg_get_serial_sequence('events', 'position')) "
            f"AS position FROM lock, generate_series(1, {n_events}) AS o ORDER BY o)"
        )
        hashes = []
        if hashed:
            hashes = [f"%(hash{i})s::text" for i in range(n_events)]
        else:
            # The hash chain (events/chain.py) in SQL: the previous hash is read in the statement's
            # snapshot, the one its version check reads, so an append that passes the check chains to
            # the event it checked. Each event's hash nests the one before it (batches are a few events).
            ctes.append(
                "prev AS (SELECT coalesce((SELECT hash FROM events WHERE stream_id = %(stream_id)s::text "
                "AND version = %(expected)s::bigint), '') AS h)"
            )
            previous = "(SELECT h FROM prev)"
            for i in range(n_events):
                previous = f"encode(sha256(convert_to({previous}, 'UTF8') || %(content{i})s::bytea), 'hex')"
                hashes.append(previous)
        stream_hashes = ", ".join(f"({i + 1}, {h})" for i, h in enumerate(hashes))
        ctes.append(f"sh AS MATERIALIZED (SELECT * FROM (VALUES {stream_hashes}) AS s(ord, hash))")

        def log_chain(previous: str) -> list[str]:
            """The log hashes of the batch after the log hash ``previous`` (events/chain.py log_link)."""
            out = []
            for i in range(1, n_events + 1):
                # The idempotency key is the first event's: a fourth field after ':' when there is one.
                key = " || coalesce(':' || %(key)s::text, '')" if i == 1 else ""
                previous = (
                    f"encode(sha256(convert_to({previous} || ':' || "
                    f"(SELECT position FROM pos WHERE ord = {i})::text || ':' || "
                    f"(SELECT hash FROM sh WHERE ord = {i}){key}, 'UTF8')), 'hex')"
                )
                out.append(previous)
            return out

        # The previous log hash comes from an UPDATE of the head row, never from a read: the statement's
        # snapshot predates the lock and may miss the append that committed while we waited, but an
        # UPDATE acts on the row's newest committed version (READ COMMITTED re-checks a row changed
        # since the snapshot), so the batch chains to the event committed just before it. In SET,
        # ``hash`` is the row's value before this update; RETURNING gives it back as previous_hash.
        ctes.append(
            "head AS (UPDATE log_head SET previous_hash = hash, "
            f"position = (SELECT position FROM pos WHERE ord = {n_events}), "
            f"hash = {log_chain('hash')[-1]} FROM lock WHERE id = 1 RETURNING previous_hash)"
        )
        log_rows = ", ".join(f"({i + 1}, {g})" for i, g in enumerate(log_chain("head.previous_hash")))
        ctes.append(f"g AS (SELECT * FROM head, LATERAL (VALUES {log_rows}) AS g(ord, log_hash))")
        rows = ", ".join(
            f"(%(type{i})s::text, %(schema_version{i})s::integer, %(data{i})s::jsonb, %(meta{i})s::jsonb, "
            f"%(occurred_at{i})s::timestamptz, {i + 1})"
            for i in range(n_events)
        )
        ctes.append(
            "ins AS (INSERT INTO events (position, stream_id, version, type, schema_version, data, meta, "
            "occurred_at, idempotency_key, hash, log_hash) "
            "SELECT pos.position, %(stream_id)s::text, "
            "CASE WHEN coalesce((SELECT max(version) FROM events WHERE stream_id = %(stream_id)s::text), 0) "
            "= %(expected)s::bigint THEN %(expected)s::bigint + u.ord END, "
            "u.type, u.schema_version, u.data, u.meta, u.occurred_at, "
            "CASE WHEN u.ord = 1 THEN %(key)s::text END, sh.hash, g.log_hash "
            f"FROM (VALUES {rows}) AS u(type, schema_version, data, meta, occurred_at, ord) "
            "JOIN pos ON pos.ord = u.ord JOIN sh ON sh.ord = u.ord JOIN g ON g.ord = u.ord "
            "ORDER BY u.ord RETURNING position, hash)"
        )
    if n_deadlines is not None:
        values = ", ".join(f"%(r_{c})s::{_PG_CAST[c]}" for c in SANDBOX_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in SANDBOX_COLUMNS if c != "id")
        ctes.append(
            f"sbx AS (INSERT INTO sandboxes ({', '.join(SANDBOX_COLUMNS)}) SELECT {values}{gate} "
            f"ON CONFLICT (id) DO UPDATE SET {updates})"
        )
        kept = ", ".join(f"%(dl_kind{i})s::text" for i in range(n_deadlines))
        ctes.append(
            f"gone AS (DELETE FROM sandbox_deadlines{' USING head' if gate else ''} "
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
    last = " SELECT position, hash FROM ins ORDER BY position DESC LIMIT 1"
    return "WITH " + ", ".join(ctes) + (last if n_events else " SELECT 1")


def _write(n_events: int, projection: Projection | None, hashed: bool = False) -> str:
    return _write_sql(n_events, None if projection is None else len(projection.deadlines), hashed)


def _projection_params(projection: Projection) -> dict[str, Any]:
    row = projection.row
    params = {f"r_{name}": getattr(row, name) for name in SANDBOX_COLUMNS}
    for i, d in enumerate(projection.deadlines):
        params[f"dl_kind{i}"] = d.kind
        params[f"dl_due_at{i}"] = utc(d.due_at)
        params[f"dl_version{i}"] = d.version
    for name in ("last_activity_at", "state_since", "created_at"):
        if params[f"r_{name}"] is not None:
            params[f"r_{name}"] = utc(params[f"r_{name}"])
    return params


def _append_params(
    stream_id: str,
    expected_version: int,
    new_events: Sequence[NewEvent],
    key: str | None,
    projection: Projection | None,
    previous: str | _Unknown | None,
) -> dict[str, Any]:
    """The statement's parameters; with the hash chain's when ``previous`` (the hash of the event at
    ``expected_version``, None before version 1) is known, else the contents the statement hashes."""
    params: dict[str, Any] = {"stream_id": stream_id, "expected": expected_version, "key": key}
    for i, e in enumerate(new_events):
        params[f"type{i}"] = e.type
        params[f"schema_version{i}"] = e.schema_version
        params[f"data{i}"] = Jsonb(e.data)
        params[f"meta{i}"] = Jsonb(e.metadata)
        params[f"occurred_at{i}"] = at = utc(e.occurred_at)
        # What the chain hashes (events/chain.py).
        content = chain.content(
            stream_id, expected_version + i + 1, e.type, e.schema_version, e.data, e.metadata, at
        )
        if isinstance(previous, _Unknown):
            params[f"content{i}"] = content
        else:
            params[f"hash{i}"] = previous = chain.link(previous, content)
    if projection is not None:
        params.update(_projection_params(projection))
    return params


class _Unknown:
    """The previous hash is not known here: the statement reads it."""


UNKNOWN = _Unknown()
# Streams whose last hash this process remembers; past this many the memory starts over.
_MAX_HEADS = 10_000


def _schema_missing(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.UndefinedTable)


def _pg_error(
    exc: psycopg.Error, stream_id: str, expected_version: int, projection: Projection | None
) -> StoreError:
    diag = exc.diag
    if isinstance(exc, psycopg.errors.NotNullViolation) and diag.column_name == "version":
        return ConcurrencyError(stream_id, expected_version)
    if isinstance(exc, psycopg.errors.UniqueViolation):
        if diag.constraint_name == UQ_LIVE_CONVERSATION:
            return live_conflict(stream_id, expected_version, projection)
        if diag.constraint_name in (UQ_STREAM_VERSION, UQ_STREAM_IDEMPOTENCY_KEY):
            return ConcurrencyError(stream_id, expected_version)
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return DatabaseLocked(
            f"writing {stream_id!r}: another writer held the append lock for longer than the lock "
            "timeout; look for a stuck session (idle in transaction) in pg_stat_activity"
        )
    if _schema_missing(exc):
        return StoreError(f"{MISSING_SCHEMA} ({exc})")
    return StoreError(f"writing {stream_id!r} failed: {exc}")


class PostgresEventStore(SqlEventStore):
    """The shared store: ``postgresql+psycopg://``."""

    dialect = "postgresql"
    _MARK = "%s"
    # JSONB comes back as one text built in SQL and parsed by one orjson call: psycopg's per-value
    # JSONB loader is a Python call each, the largest part of reading a row (measured ~1.7 against
    # ~2.5 us per event).
    _EVENT_COLUMNS: ClassVar[str] = (
        "position, stream_id, version, type, schema_version, json_build_array(data, meta)::text, occurred_at"
    )

    def _open(self, url_or_engine: str | Engine) -> None:
        self._owns_engine = isinstance(url_or_engine, str)
        engine = sa.create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        if engine.dialect.name != self.dialect:
            raise StoreError(f"{type(self).__name__} cannot open {engine.url!r}")
        if engine.dialect.driver != "psycopg":
            raise StoreError(f"Postgres needs the psycopg 3 driver (postgresql+psycopg://), not {engine.url}")
        self._engine = engine
        self._pg_lock_timeout = f"{int(self._lock_timeout * 1000)}ms"
        # stream id -> (version, hash) of the last event this process appended to it, as on SQLite: an
        # event is immutable once committed, so when the stream is still at that version the client
        # hashes the new events itself and the statement skips the lookup; when it moved on, the
        # statement's version check refuses the append, hashes and all.
        self._heads: dict[str, tuple[int, str]] = {}
        sa.event.listen(engine, "connect", self._configure)
        # Connections pooled before the listener was added would miss the session settings.
        engine.dispose(close=False)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def _configure(self, dbapi_connection: psycopg.Connection[Any], _record: object) -> None:
        # Bounds the wait for the append lock: a writer holding it that long is stuck, not busy.
        dbapi_connection.execute(f"SET lock_timeout = '{self._pg_lock_timeout}'")
        # Timestamps come back in UTC (no per-row conversion) and JSONB through orjson, for raw reads.
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
        set_json_loads(orjson.loads, dbapi_connection)
        # And JSONB parameters (event data and metadata) go out through orjson rather than json.dumps:
        # cheaper by more than the hash chain's own encoding costs the append.
        set_json_dumps(orjson.dumps, dbapi_connection)
        dbapi_connection.commit()

    def _sa_error(self, exc: sa.exc.SQLAlchemyError) -> StoreError:
        if not isinstance(exc, sa.exc.DBAPIError):  # e.g. the pool timed out
            return StoreError(f"database error: {exc}")
        if exc.orig is not None and _schema_missing(exc.orig):
            return StoreError(f"{MISSING_SCHEMA} ({exc.orig})")
        return StoreError(f"database error: {exc.orig}")

    @contextmanager
    def _autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled driver connection in autocommit mode, for single statements."""
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

    # -- writes ------------------------------------------------------------------------------------

    def _append(
        self,
        stream_id: str,
        expected_version: int,
        new_events: Sequence[NewEvent],
        key: str | None,
        projection: Projection | None,
    ) -> AppendResult:
        previous = self._previous_hash(stream_id, expected_version)
        params = _append_params(stream_id, expected_version, new_events, key, projection, previous)
        write = _write(len(new_events), projection, hashed=previous is not UNKNOWN)
        with self._autocommit() as pg:
            try:
                written = pg.execute(write, params, prepare=True).fetchone()
            except psycopg.Error as exc:
                error = _pg_error(exc, stream_id, expected_version, projection)
                if key is not None and isinstance(error, ConcurrencyError):
                    # A retried append fails like a stale one (its version is taken), so the key is
                    # looked up only after a conflict, never on the hot path.
                    try:
                        duplicate = pg.execute(
                            _SELECT_DUPLICATE, (len(new_events), stream_id, key)
                        ).fetchone()
                    except psycopg.Error as lookup_exc:
                        raise StoreError(f"writing {stream_id!r} failed: {lookup_exc}") from None
                    if duplicate is not None:
                        return AppendResult(stream_id, duplicate[0], duplicate[1], duplicate=True)
                raise error from None
        return self._appended(stream_id, expected_version + len(new_events), written)

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
        """The append in a transaction of three statements: the append lock, the counts, the write.

        The single-statement append cannot count: under READ COMMITTED its snapshot predates the lock,
        so it would miss a sandbox another replica made live while we waited, and no constraint
        would catch that (unlike a taken version). A later statement of the same transaction gets a
        fresh snapshot, taken while we hold the lock, which every append that changes a state holds
        until its commit: the counts are exact until ours commits. The write statement takes the same
        lock again, which a transaction already holding it is granted at once. Only appends that make
        a sandbox hold compute pay for the extra round trips.
        """
        previous = self._previous_hash(stream_id, expected_version)
        params = _append_params(stream_id, expected_version, new_events, key, projection, previous)
        write = _write(len(new_events), projection, hashed=previous is not UNKNOWN)
        with self._autocommit() as pg:
            try:
                with pg.transaction():
                    pg.execute(PG_LOCK)
                    if key is not None and (
                        duplicate := pg.execute(
                            _SELECT_DUPLICATE, (len(new_events), stream_id, key)
                        ).fetchone()
                    ):
                        return AppendResult(stream_id, duplicate[0], duplicate[1], duplicate=True)
                    for limit in capacity:
                        sql, count_params = capacity_count_sql(limit, stream_id, "%s")
                        (others,) = cast(tuple[int], pg.execute(sql, count_params).fetchone())
                        if (refused := capacity_refusal(stream_id, limit, others)) is not None:
                            raise refused
                    if unleased_at is not None:
                        # Fresh snapshot under the lock, as the counts: every lease taken before it.
                        held_row = pg.execute(_LEASES_HELD, (stream_id, unleased_at)).fetchone()
                        if (leased := lease_refusal(stream_id, cast(tuple[int], held_row)[0])) is not None:
                            raise leased
                    written = pg.execute(write, params, prepare=True).fetchone()
            except psycopg.Error as exc:
                raise _pg_error(exc, stream_id, expected_version, projection) from None
        return self._appended(stream_id, expected_version + len(new_events), written)

    def _write_leases(self, statements: Sequence[tuple[str, tuple[Any, ...]]], what: str) -> int:
        count = 0
        with self._autocommit() as pg:
            try:
                with pg.transaction():
                    pg.execute(PG_LOCK)
                    for sql, params in statements:
                        count = pg.execute(sql.replace("?", "%s"), params).rowcount
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.errors.LockNotAvailable) or _schema_missing(exc):
                    raise _pg_error(exc, what, 0, None) from None
                raise StoreError(f"writing the {what} failed: {exc}") from None
        return count

    def _previous_hash(self, stream_id: str, expected_version: int) -> str | _Unknown | None:
        """The hash the first new event chains to, when known here without a read."""
        if expected_version == 0:
            return None
        head = self._heads.get(stream_id)
        return head[1] if head is not None and head[0] == expected_version else UNKNOWN

    def _appended(self, stream_id: str, version: int, written: tuple[int, str] | None) -> AppendResult:
        if written is None:  # the head row is gone: the statement wrote nothing
            raise StoreError(LOG_HEAD_MISSING)
        position, last_hash = written
        if len(self._heads) >= _MAX_HEADS:
            self._heads.clear()
        self._heads[stream_id] = (version, last_hash)
        return AppendResult(stream_id, version, position)

    def _write_projection(self, projection: Projection) -> None:
        row = projection.row
        with self._autocommit() as pg:
            try:
                pg.execute(_write(0, projection), _projection_params(projection), prepare=True)
            except psycopg.Error as exc:
                raise _pg_error(exc, row.id, row.version, projection) from None

    # -- event reads -------------------------------------------------------------------------------

    def _event_rows(self, sql: str, params: tuple[Any, ...], what: str) -> list[RecordedEvent]:
        """Events straight from psycopg, skipping SQLAlchemy's per-row result processing.

        Autocommit: a lone SELECT needs no transaction, and so no ROLLBACK round trip after it
        (which doubled the cost of loading one sandbox).
        """
        try:
            with self._autocommit() as pg, pg.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params, prepare=True)
                rows = cur.fetchall()
        except psycopg.Error as exc:
            if _schema_missing(exc):
                raise StoreError(f"{MISSING_SCHEMA} ({exc})") from None
            raise StoreError(f"database error reading {what}: {exc}") from None
        new, record, loads, utc_ = tuple.__new__, RecordedEvent, orjson.loads, UTC
        try:
            return [
                new(record, (p, s, v, t, sv, *loads(dm), o if o.tzinfo is utc_ else o.astimezone(utc_)))
                for p, s, v, t, sv, dm, o in rows
            ]
        except orjson.JSONDecodeError:
            pass
        # JSONB holds what orjson refuses (a number beyond a double, 1e400): name the row, as SQLite does,
        # instead of ending every reader with a parse error that names nothing.
        for _p, s, v, _t, _sv, dm, _o in rows:
            try:
                loads(dm)
            except orjson.JSONDecodeError as exc:
                raise CorruptStream(s, v, f"its data or metadata cannot be parsed ({exc})") from None
        raise AssertionError("a page failed to build, its rows did not")  # pragma: no cover

    _CHAIN_COLUMNS: ClassVar[str] = (
        "position, stream_id, version, type, schema_version, data::text, meta::text, occurred_at, hash"
    )

    def _chain_rows(self, after: tuple[Any, Any], limit: int) -> list[tuple[Any, ...]]:
        return self._fetch(READ_CHAIN_ROWS.format(columns=self._CHAIN_COLUMNS, mark="?"), (*after, limit))

    # -- reads of rows -----------------------------------------------------------------------------

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # Autocommit, as for events: a lone SELECT needs no transaction, nor a ROLLBACK after it.
        try:
            with self._autocommit() as pg:
                return pg.execute(sql.replace("?", "%s"), params).fetchall()
        except psycopg.Error as exc:
            if _schema_missing(exc):
                raise StoreError(f"{MISSING_SCHEMA} ({exc})") from None
            raise StoreError(f"database error: {exc}") from None

    def _time_out(self, value: Any) -> datetime:
        # The session's time zone is UTC (``_configure``), so this is almost always the value itself.
        return cast(datetime, value if value.tzinfo is UTC else value.astimezone(UTC))

    def _time_in(self, value: datetime) -> Any:
        return value

    def replace_all_projections(self, projections: Iterable[Projection]) -> None:
        iterator = iter(projections)
        try:
            with self._engine.connect() as conn:
                conn.execute(sandbox_deadlines.delete())
                conn.execute(sandboxes.delete())
                while chunk := list(islice(iterator, REPLACE_CHUNK)):
                    conn.execute(
                        sandboxes.insert(),
                        [dict(zip(SANDBOX_COLUMNS, row_values(p.row, utc), strict=True)) for p in chunk],
                    )
                    deadlines = [
                        dict(zip(DEADLINE_COLUMNS, deadline_values(d, utc), strict=True))
                        for p in chunk
                        for d in p.deadlines
                    ]
                    if deadlines:
                        conn.execute(sandbox_deadlines.insert(), deadlines)
                conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            raise self._sa_error(exc) from None
