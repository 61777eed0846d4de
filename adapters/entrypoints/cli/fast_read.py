"""`ls` and `show` on an up-to-date SQLite log, without building the service (settings, provider, snapshot
store): the event store alone, which on SQLite loads nothing but sqlite3.

Anything else — PostgreSQL, a log still to be created or migrated — goes the usual way, which creates or
upgrades the embedded log or names what to run.
"""

from __future__ import annotations

from sandbox_lifecycle.adapters.composition.settings import Settings, sqlite_path
from sandbox_lifecycle.events import revision
from sandbox_lifecycle.events.store.sqlite import SqliteEventStore


def rows_reader(settings: Settings) -> SqliteEventStore | None:
    url = settings.database_url
    if not url.startswith("sqlite"):
        return None
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None
    try:
        current = revision.current_revision(url, path)
    except Exception:  # unreadable here: the usual path reports it properly
        return None
    head = revision.head_revision()
    if head is None or current != head:
        return None
    return SqliteEventStore(url)
