"""The store factory: one module per backend, and only the chosen backend's driver is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox_lifecycle.events.records import StoreError
from sandbox_lifecycle.events.store import SqlEventStore
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
        from sandbox_lifecycle.events.store import SqlEventStore
        store = SqlEventStore({f"sqlite:///{db}"!r})
        store.append("s", 0, [NewEvent("Touched", {{}}, datetime.now(UTC))])
        assert [e.version for e in store.read_stream("s")] == [1]
        store.close()
        try:
            SqlEventStore("postgresql+psycopg://u@127.0.0.1/db")
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
    store = SqlEventStore(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert type(store) is SqliteEventStore and isinstance(store, SqlEventStore)
    finally:
        store.close()
    with pytest.raises(StoreError, match="unsupported database"):
        SqlEventStore("mysql://u@localhost/db")
    with pytest.raises(StoreError, match="psycopg 3"):
        SqlEventStore("postgresql+psycopg2://u@localhost/db")


@pytest.mark.postgres
def test_postgres_urls_open_the_postgres_backend(pg_migrated_url: str) -> None:
    from sandbox_lifecycle.events.store.postgres import PostgresEventStore

    store = SqlEventStore(pg_migrated_url, lock_timeout=1.0)
    try:
        assert type(store) is PostgresEventStore
        with pytest.raises(StoreError, match="cannot open"):
            SqliteEventStore(store.engine)
    finally:
        store.close()
