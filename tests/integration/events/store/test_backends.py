"""The store factory: one module per backend, and only the chosen backend's driver is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox_lifecycle.events.records import StoreError
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from sandbox_lifecycle.events.store.sqlite import SqliteEventStore


def test_sqlite_store_works_without_psycopg_installed(tmp_path: Path, sqlite_template: Path) -> None:
    db = tmp_path / "no-pg.db"
    db.write_bytes(sqlite_template.read_bytes())
    # psycopg is the [postgres] extra: None in sys.modules makes every import of it fail, as if absent.
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["psycopg"] = None
        from datetime import UTC, datetime
        from sandbox_lifecycle.events.records import NewEvent, StoreError
        from sandbox_lifecycle.events.store import open_store
        store = open_store({f"sqlite:///{db}"!r})
        store.append("s", 0, [NewEvent("Touched", {{}}, datetime.now(UTC))])
        assert [e.version for e in store.read_stream("s")] == [1]
        store.close()
        try:
            open_store("postgresql+psycopg://u@127.0.0.1/db")
        except StoreError as exc:
            assert "sandbox-lifecycle[postgres]" in str(exc), exc
        else:
            raise AssertionError("a Postgres URL without psycopg must be refused")
        assert "psycopg" not in {{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}}
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_factory_picks_the_backend_of_the_url(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert type(store) is SqliteEventStore and isinstance(store, SqlEventStore)
    finally:
        store.close()
    with pytest.raises(StoreError, match="unsupported database"):
        open_store("mysql://u@localhost/db")
    with pytest.raises(StoreError, match="psycopg 3"):
        open_store("postgresql+psycopg2://u@localhost/db")


def test_the_shared_base_names_the_factory_instead_of_picking_a_backend(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="open_store"):
        SqlEventStore(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.postgres
def test_postgres_urls_open_the_postgres_backend(pg_migrated_url: str) -> None:
    from sandbox_lifecycle.events.store.postgres import PostgresEventStore

    store = open_store(pg_migrated_url, lock_timeout=1.0)
    try:
        assert type(store) is PostgresEventStore
        with pytest.raises(StoreError, match="cannot open"):
            SqliteEventStore(store.engine)
    finally:
        store.close()


def test_a_sqlite_store_works_without_importing_sqlalchemy(tmp_path: Path, sqlite_template: Path) -> None:
    """Every short CLI command opens the store: on SQLite that costs sqlite3, not SQLAlchemy."""
    db = tmp_path / "plain.db"
    db.write_bytes(sqlite_template.read_bytes())
    script = textwrap.dedent(
        f"""
        import sys
        from datetime import UTC, datetime, timedelta
        from sandbox_lifecycle.events.records import Deadline, NewEvent, Projection, SandboxRow
        from sandbox_lifecycle.events.store import open_store
        now = datetime.now(UTC)
        row = SandboxRow("s", "data-app", "docker", "ready", 1, "c", "ref", None, None, None, now, now, now)
        due = Deadline("s", "idle", now + timedelta(minutes=5), 1)
        store = open_store({f"sqlite:///{db}"!r})
        store.append("s", 0, [NewEvent("Touched", {{}}, now)], projection=Projection(row, (due,)))
        assert [e.version for e in store.read_stream("s")] == [1]
        assert store.get_sandbox("s") == row and store.list_sandboxes() == [row]
        assert store.find_live("c", "data-app") == row
        assert store.due_deadlines(now + timedelta(minutes=5)) == [due]
        assert store.next_deadline() == due.due_at
        store.close()
        assert "sqlalchemy" not in sys.modules, "a SQLite store imported SQLAlchemy"
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_sqlite_urls_name_a_file_or_memory_and_nothing_else() -> None:
    from sandbox_lifecycle.events.store.sqlite import sqlite_path

    assert sqlite_path("sqlite:///relative/log.db") == "relative/log.db"
    assert sqlite_path("sqlite:////var/lib/log.db") == "/var/lib/log.db"
    assert sqlite_path("sqlite:///with%20space.db") == "with space.db"
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None
    # SQLAlchemy would turn a query into driver options; this store takes none, so none is ignored.
    with pytest.raises(StoreError, match="no query parameters"):
        open_store("sqlite:///log.db?timeout=30")


def test_an_in_memory_engine_is_refused_rather_than_opened_as_another_database() -> None:
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://")
    try:
        with pytest.raises(StoreError, match="scratch"):
            SqliteEventStore(engine)
    finally:
        engine.dispose()


def test_the_read_model_columns_are_the_row_fields_in_order() -> None:
    """The store reads and writes rows positionally, in SandboxRow's field order."""
    from dataclasses import fields

    from sandbox_lifecycle.events.records import SandboxRow
    from sandbox_lifecycle.events.tables import sandboxes

    assert [c.name for c in sandboxes.columns] == [f.name for f in fields(SandboxRow)]
