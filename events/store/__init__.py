"""The event store: an append-only log plus the read models written in the same transaction.

``open_store(url)`` opens the store of the URL's backend, one module each over a shared base (as
eventsourcing 9.x splits its recorders, each chosen by one setting):

- ``base``: ``SqlEventStore``, the reads as SQL, argument checks and projection rows (no driver);
- ``sqlite``: ``SqliteEventStore``, on sqlite3 alone: WAL, one writer, busy handling;
- ``postgres``: ``PostgresEventStore``, the single-statement psycopg append under the advisory lock.

The backends know nothing of each other and the base knows neither: this package picks. Only the chosen
backend's module is imported, so a SQLite-only install works without psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox_lifecycle.events.names import redact_url
from sandbox_lifecycle.events.records import StoreError
from sandbox_lifecycle.events.store.base import DEFAULT_BUSY_TIMEOUT, DEFAULT_LOCK_TIMEOUT, SqlEventStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["DEFAULT_BUSY_TIMEOUT", "DEFAULT_LOCK_TIMEOUT", "SqlEventStore", "open_store", "store_class"]


def open_store(url_or_engine: str | Engine, **options: Any) -> SqlEventStore:
    """The event store at ``url_or_engine`` (``sqlite:///path`` or ``postgresql+psycopg://``), opened
    by its backend; ``options`` as ``SqlEventStore`` takes them (``busy_timeout``, ``lock_timeout``,
    ``sqlite_synchronous``). The schema must exist already (``events.migrate``)."""
    store: SqlEventStore = store_class(url_or_engine)(url_or_engine, **options)
    return store


def store_class(url_or_engine: str | Engine) -> type[SqlEventStore]:
    """The backend's class for a URL or engine; StoreError names what to use instead."""
    url: object
    if isinstance(url_or_engine, str):
        scheme = url_or_engine.partition("://")[0] if "://" in url_or_engine else ""
        name, _, driver = scheme.partition("+")
        url = redact_url(url_or_engine)
    else:
        url = url_or_engine.url  # its repr hides the password
        name, driver = url_or_engine.dialect.name, url_or_engine.dialect.driver
    if name == "sqlite" and driver in ("", "pysqlite"):
        # Imported when chosen: a SQLite store loads sqlite3 alone, a Postgres one psycopg.
        from sandbox_lifecycle.events.store.sqlite import SqliteEventStore

        return SqliteEventStore
    if name == "postgresql":
        if driver != "psycopg":
            raise StoreError(f"Postgres needs the psycopg 3 driver (postgresql+psycopg://), not {url!r}")
        try:
            # Imported when chosen: psycopg is the optional `postgres` extra.
            from sandbox_lifecycle.events.store.postgres import PostgresEventStore
        except ImportError as exc:
            raise StoreError(f"Postgres needs psycopg ({exc}): install sandbox-lifecycle[postgres]") from None
        return PostgresEventStore
    raise StoreError(f"unsupported database {url!r}: use sqlite:/// or postgresql+psycopg://")
