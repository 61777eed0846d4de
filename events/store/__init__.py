"""The event store: an append-only log plus the read models written in the same transaction.

``SqlEventStore(url)`` opens the store of the URL's backend, one module each over a shared base (as
eventsourcing 9.x splits its recorders):

- ``base``: ``SqlEventStore``, the reads as SQL, argument checks and projection rows (no driver);
- ``sqlite``: ``SqliteEventStore``, on sqlite3 alone: WAL, one writer, busy handling;
- ``postgres``: ``PostgresEventStore``, the single-statement psycopg append under the advisory lock.

Only the chosen backend's module is imported, so a SQLite-only install works without psycopg.
"""

from __future__ import annotations

from sandbox_lifecycle.events.store.base import DEFAULT_BUSY_TIMEOUT, DEFAULT_LOCK_TIMEOUT, SqlEventStore

__all__ = ["DEFAULT_BUSY_TIMEOUT", "DEFAULT_LOCK_TIMEOUT", "SqlEventStore"]
