"""A short command loads only what it uses: no alembic once the schema is current, and only the chosen
provider's library. Each case runs in a fresh interpreter, where sys.modules tells what was imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_lifecycle.events import migrate, revision

UNUSED = ("alembic", "e2b", "boto3", "botocore", "psycopg", "prometheus_client", "rich")

_PROBE = """
import json, sys
from sandbox_lifecycle.adapters.cli.commands import main
code = main(sys.argv[1:])
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"code": code, "loaded": loaded}))
"""


def run_cli(data_dir: Path, *argv: str) -> tuple[int, set[str]]:
    env = {
        **os.environ,
        "SANDBOX_PROVIDER": "docker",
        "SANDBOX_DATA_DIR": str(data_dir),
        "SANDBOX_DEPLOYMENT": "importprobe",
    }
    for name in ("SANDBOX_DATABASE_URL", "S3_BUCKET", "E2B_API_KEY", "SANDBOX_LOG_FORMAT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return int(report["code"]), set(report["loaded"])


def test_a_current_sqlite_schema_is_checked_without_alembic(tmp_path: Path) -> None:
    # The first command creates and migrates the embedded log: that one needs alembic.
    code, loaded = run_cli(tmp_path, "ls", "--json")
    assert code == 0 and "alembic" in loaded
    code, loaded = run_cli(tmp_path, "ls", "--json")
    assert code == 0
    assert not loaded & set(UNUSED), loaded & set(UNUSED)
    # A read of rows needs no provider, and on an up-to-date SQLite file not even SQLAlchemy.
    assert "docker" not in loaded and "sqlalchemy" not in loaded


@pytest.mark.docker
def test_a_docker_command_loads_docker_and_nothing_else(tmp_path: Path, docker_engine: object) -> None:
    # An exec talks to the engine through the stdlib client: neither the docker SDK nor requests/urllib3
    # under it load (they cost more than the exec itself), on a sandbox that is missing or running.
    sdk = {"docker", "requests", "urllib3"}
    run_cli(tmp_path, "ls")  # migrate first
    code, loaded = run_cli(tmp_path, "exec", "0000000000000000", "--", "true")
    assert code == 4  # no such sandbox: the provider was built, the log was read
    assert not loaded & sdk, loaded & sdk
    assert not loaded & set(UNUSED), loaded & set(UNUSED)

    import shutil

    from sandbox_lifecycle.adapters.bootstrap import build_service
    from tests.docker.conftest import DEFAULT_EGRESS_DIR, remove_network_leftovers

    env = {**os.environ, "SANDBOX_PROVIDER": "docker", "SANDBOX_DATA_DIR": str(tmp_path)}
    env["SANDBOX_DEPLOYMENT"] = "importprobe"
    env.pop("SANDBOX_DATABASE_URL", None)
    env.pop("S3_BUCKET", None)
    service = build_service(env)
    row = service.create("data-app")
    try:
        code, loaded = run_cli(tmp_path, "exec", row.id, "--", "true")
        assert code == 0
        assert not loaded & sdk, loaded & sdk
        assert not loaded & set(UNUSED), loaded & set(UNUSED)
    finally:
        service.destroy(row.id)
        remove_network_leftovers(docker_engine, "sandbox-lifecycle.deployment=importprobe")
        shutil.rmtree(os.path.join(DEFAULT_EGRESS_DIR, "importprobe"), ignore_errors=True)


def test_the_scanned_head_is_alembics_head() -> None:
    assert revision.head_revision() == migrate.head()


def test_the_one_query_revision_matches_alembic_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    assert revision.current_revision(url, tmp_path / "log.db") is None  # no file yet
    migrate.upgrade(url)
    assert revision.current_revision(url, tmp_path / "log.db") == migrate.current(url) == migrate.head()


@pytest.mark.postgres
def test_the_one_query_revision_matches_alembic_on_postgres(shared_pg_url: str) -> None:
    assert revision.current_revision(shared_pg_url) == migrate.current(shared_pg_url) == migrate.head()
