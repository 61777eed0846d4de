"""Fixtures shared across suites: migrated, empty event logs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from events.migrate import upgrade
from tests.store.helpers import pg_schema

PG_ENV = "SANDBOX_TEST_PG_URL"


@pytest.fixture(scope="session")
def shared_pg_url() -> Iterator[str]:
    """A migrated private schema on the test PostgreSQL, for suites outside tests/store."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: scripts/test starts PostgreSQL and sets it")
    with pg_schema(base) as url:
        upgrade(url)
        yield url


@pytest.fixture
def clean_pg_url(shared_pg_url: str) -> str:
    engine = sa.create_engine(shared_pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE events, sandboxes, sandbox_deadlines RESTART IDENTITY")
    engine.dispose()
    return shared_pg_url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "events.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def clean_sqlite_url(tmp_path: Path, migrated_sqlite_template: Path) -> str:
    path = tmp_path / "events.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite:///{path}"
