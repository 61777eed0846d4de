"""The schema revision, read without alembic: one query for the database's, a file scan for the code's.

Importing alembic and its migration machinery costs about 0.2 s, which every short command paid to learn
that nothing needs migrating. ``events.migrate`` (alembic) is imported only when the two differ.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

_VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"
_REVISION = re.compile(r"^revision(?:\s*:\s*[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?:\s*:\s*[^=]+)?\s*=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


def head_revision() -> str | None:
    """The newest revision this code ships, or None when the scripts do not have exactly one head
    (then the caller asks alembic, which knows every way a script can be written)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in _VERSIONS.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        rev = _REVISION.search(text)
        if rev is None:
            return None
        revisions.add(rev.group(1))
        down = _DOWN.search(text)
        if down is not None:
            parents.update(_QUOTED.findall(down.group(1)))
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


def current_revision(url: str, sqlite_file: Path | None = None) -> str | None:
    """The revision the database at ``url`` is at (None when never migrated), in one query.

    SQLite is read with the standard library (``sqlite_file``, the path of the URL); any other database
    through SQLAlchemy. A database that cannot be opened raises the driver's error.
    """
    if url.startswith("sqlite"):
        if sqlite_file is None or not sqlite_file.exists():
            return None  # in-memory, or a file about to be created: nothing is migrated yet
        conn = sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            ).fetchone()
            if found is None:
                return None
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return str(row[0]) if row else None
        finally:
            conn.close()
    # why here: a SQLite store answers from sqlite3 alone; SQLAlchemy loads only for another URL
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as db:
            if not sa.inspect(db).has_table("alembic_version"):
                return None
            value = db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            return str(value) if value is not None else None
    finally:
        engine.dispose()
