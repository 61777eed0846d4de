"""The alembic migrations build exactly the schema of events/tables.py, from empty, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sandbox_lifecycle.events.migrate import current, head, upgrade
from sandbox_lifecycle.events.tables import metadata

REPO = Path(__file__).resolve().parents[3]


def test_upgrade_from_empty_reaches_head_and_matches_the_models(
    empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the script location must not depend on the working directory
    assert current(empty_db_url) is None

    upgrade(empty_db_url)
    upgrade(empty_db_url)  # idempotent

    assert current(empty_db_url) == head() == "0005"
    engine = sa.create_engine(empty_db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
            names = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diffs == []
    assert {"events", "sandboxes", "sandbox_deadlines", "alembic_version"} <= names


def test_alembic_command_line_takes_the_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "SANDBOX_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert current(url) == "0005"
