"""Fixtures of the event store contract suite: every test runs on SQLite and on a real PostgreSQL.

Postgres comes from ``SANDBOX_TEST_PG_URL`` (scripts/start-postgres.sh prints one). The suite migrates one
private schema per session and truncates it before each test; SQLite tests get a copy of a migrated file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sandbox_lifecycle.events.migrate import upgrade
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from tests.conftest import require_marker
from tests.store.helpers import pg_schema

PG_ENV = "SANDBOX_TEST_PG_URL"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set: start one with scripts/start-postgres.sh and export its URL")
    return url


@pytest.fixture(scope="session")
def pg_migrated_url(pg_base_url: str) -> Iterator[str]:
    with pg_schema(pg_base_url) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "sandbox_lifecycle.events.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def real_db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of a migrated, empty event store on ``backend`` (``sqlite`` or ``postgres``)."""
    if backend == "sqlite":
        path = request.getfixturevalue("tmp_path") / "sandbox_lifecycle.events.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    require_marker(request, "postgres")
    url: str = request.getfixturevalue("pg_migrated_url")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE events, sandboxes, sandbox_deadlines, sandbox_leases, relay_checkpoints "
            "RESTART IDENTITY"
        )
        conn.exec_driver_sql("UPDATE log_head SET position = 0, hash = '', previous_hash = ''")
    engine.dispose()
    return url


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of a migrated, empty event store on the parametrised backend."""
    return real_db_url(backend, request)


@pytest.fixture
def store(db_url: str) -> Iterator[SqlEventStore]:
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database that was never migrated."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with pg_schema(request.getfixturevalue("pg_base_url")) as url:
        yield url
