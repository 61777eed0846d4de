"""Fixtures shared across suites: migrated, empty event logs on SQLite and on the real PostgreSQL, and
the real Docker engine with the local sandbox images."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import sqlalchemy as sa

from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.events.migrate import upgrade
from tests.store.helpers import pg_schema

PG_ENV = "SANDBOX_TEST_PG_URL"
DOCKER_IMAGES = {
    DATA_APP: os.environ.get("SANDBOX_DOCKER_IMAGE", "lightdash-sandbox:local"),
    AI_WRITEBACK: os.environ.get("SANDBOX_AI_WRITEBACK_DOCKER_IMAGE", "lightdash-ai-writeback:local"),
}


LABEL_ROLE = "sandbox-lifecycle.role"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
LABEL_MANAGED = "sandbox-lifecycle.managed"
EGRESS_STATE_ROOT = "/var/lib/sandbox-lifecycle/egress"


@pytest.fixture(scope="session", autouse=True)
def _idle_egress_points_removed() -> Iterator[None]:
    """A test that makes a Docker sandbox starts its deployment's egress container, which stays until a
    sweep finds it idle, as in production; most tests never sweep. At the end of the session remove the
    egress points and port forwarders the session started whose deployment has no sandbox container
    left, with their networks and state, so runs do not pile them up on the engine."""
    started = time.time() - 1
    yield
    try:
        client = docker.from_env(timeout=20)
        client.ping()
    except Exception:
        return  # no engine: nothing was started on it
    # Best effort: a cleanup that fails must not fail the run it cleans up after.
    with contextlib.suppress(docker.errors.DockerException, OSError):
        _remove_idle_egress_points(client.api, started)


def _remove_idle_egress_points(api: docker.APIClient, started: float) -> None:
    deployments: set[str] = set()
    for row in api.containers(all=True, filters={"label": LABEL_ROLE}):
        deployment = (row.get("Labels") or {}).get(LABEL_DEPLOYMENT)
        if deployment and row.get("Created", 0) >= started:
            deployments.add(deployment)
    # And the state a test wrote without an egress container ever starting (a failed start, a refused
    # create): every state directory this session touched.
    with contextlib.suppress(OSError):
        for entry in os.scandir(EGRESS_STATE_ROOT):
            if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime >= started:
                deployments.add(entry.name)
    for deployment in sorted(deployments):
        label = f"{LABEL_DEPLOYMENT}={deployment}"
        if api.containers(all=True, filters={"label": [label, f"{LABEL_MANAGED}=1"]}):
            continue  # a sandbox still runs there: its egress point is in use
        for row in api.containers(all=True, filters={"label": [label, LABEL_ROLE]}):
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(row["Id"], force=True, v=True)
        for net in api.networks(filters={"label": [label, LABEL_ROLE]}):
            with contextlib.suppress(docker.errors.APIError):
                api.remove_network(net["Id"])
        shutil.rmtree(os.path.join(EGRESS_STATE_ROOT, deployment), ignore_errors=True)


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
        conn.exec_driver_sql("TRUNCATE events, sandboxes, sandbox_deadlines, sandbox_leases RESTART IDENTITY")
    engine.dispose()
    return shared_pg_url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "sandbox_lifecycle.events.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def clean_sqlite_url(tmp_path: Path, migrated_sqlite_template: Path) -> str:
    path = tmp_path / "sandbox_lifecycle.events.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    """The local engine, with both sandbox images built.

    No engine: a skip that says what to run (scripts/test always starts one). An engine without the
    images is a failure, not a skip: the suites that need them would otherwise pass without running.
    """
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"Docker engine unreachable ({exc}); start it with `sudo scripts/start-docker.sh`")
    missing = []
    for kind, image in DOCKER_IMAGES.items():
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(f"{image} ({kind})")
    if missing:
        client.close()
        pytest.fail(
            f"missing images {', '.join(missing)}: run `sudo scripts/start-docker.sh`, which builds them"
        )
    yield client
    client.close()
