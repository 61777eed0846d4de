"""Fixtures shared across suites: migrated, empty event logs on SQLite and on the real PostgreSQL, and
the real Docker engine with the local sandbox images."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import sqlalchemy as sa

from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.events.migrate import upgrade
from tests.support import session, tiers
from tests.support.store_helpers import pg_schema

PG_ENV = "SANDBOX_TEST_PG_URL"
DOCKER_IMAGES = {
    DATA_APP: os.environ.get("SANDBOX_DOCKER_IMAGE", "lightdash-sandbox:local"),
    AI_WRITEBACK: os.environ.get("SANDBOX_AI_WRITEBACK_DOCKER_IMAGE", "lightdash-ai-writeback:local"),
}


LABEL_ROLE = "sandbox-lifecycle.role"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
LABEL_MANAGED = "sandbox-lifecycle.managed"
EGRESS_STATE_ROOT = "/var/lib/sandbox-lifecycle/egress"


# Every deployment (so every container, network, volume, disk image, loop device and state directory) a
# test makes starts with this run's prefix, and clean-up removes only what starts with it: a demo or
# another run beside this one on the same machine is never touched.
SESSION_PREFIX = session.PREFIX

# Where an unmarked test finds the Docker engine: nowhere, with a name that says why.
NO_ENGINE = "unix:///nonexistent/this-test-has-no-docker-marker.sock"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The folder decides the tier: a test whose markers or fixtures reach beyond its tier fails the
    collection, whatever `-m` or path selected (tests/support/tiers.py says what each tier may reach)."""
    problems = [problem for item in items for problem in tiers.misplaced(item)]
    if problems:
        raise pytest.UsageError("tests outside their tier:\n  " + "\n  ".join(problems))


def require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    """For a component reached through getfixturevalue (invisible to the collection check above)."""
    if tiers.tier_of(request.node.path) == "unit":
        pytest.fail(f"{request.node.nodeid} is in tests/unit, which reaches no {marker}", pytrace=False)
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(f"{request.node.nodeid} uses {marker} without @pytest.mark.{marker}", pytrace=False)


@pytest.fixture(autouse=True)
def _component_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the docker marker finds no engine, however it looks for one (the SDK, the CLI in
    a subprocess); a unit test finds no test database either; a live test without its key skips; and
    whatever deployment a test makes by default carries this run's prefix."""
    if request.node.get_closest_marker("docker") is None:
        monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    if tiers.tier_of(request.node.path) == "unit":
        monkeypatch.delenv(PG_ENV, raising=False)
    if key := tiers.missing_live_key(request.node, dict(os.environ)):
        pytest.skip(f"{key} is not set")
    monkeypatch.setenv("SANDBOX_DEPLOYMENT", session.new_deployment())


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`sandboxctl` (run in-process by CLI tests) replaces the root logger's handlers with its own, whose
    filter scrubs secrets in the record itself; left in place, it rewrote later tests' captured logs
    (the test database's password is the word "sandbox")."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def _session_leftovers_removed() -> Iterator[None]:
    """A test that makes a Docker sandbox starts its deployment's egress container, which stays until a
    sweep finds it idle, as in production; most tests never sweep. At the end of the session remove the
    egress points, port forwarders, networks and state of this session's deployments (their names start
    with SESSION_PREFIX) that have no sandbox container left. Nothing of another deployment is touched."""
    yield
    try:
        client = docker.from_env(timeout=20)
        client.ping()
    except Exception:
        client = None  # no engine: only state directories can be left
    # Best effort: a cleanup that fails must not fail the run it cleans up after.
    with contextlib.suppress(docker.errors.DockerException, OSError):
        _remove_session_leftovers(client.api if client else None)


def _remove_session_leftovers(api: docker.APIClient | None) -> None:
    deployments: set[str] = set()
    if api is not None:
        for row in api.containers(all=True, filters={"label": LABEL_ROLE}):
            deployments.add((row.get("Labels") or {}).get(LABEL_DEPLOYMENT, ""))
    with contextlib.suppress(OSError):
        deployments.update(e.name for e in os.scandir(EGRESS_STATE_ROOT) if e.is_dir(follow_symlinks=False))
    for deployment in sorted(d for d in deployments if d.startswith(SESSION_PREFIX)):
        label = f"{LABEL_DEPLOYMENT}={deployment}"
        if api is not None:
            if api.containers(all=True, filters={"label": [label, f"{LABEL_MANAGED}=1"]}):
                continue  # a sandbox still runs there: its egress point is in use
            for row in api.containers(all=True, filters={"label": [label, LABEL_ROLE]}):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_container(row["Id"], force=True, v=True)
            for net in api.networks(filters={"label": [label, LABEL_ROLE]}):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_network(net["Id"])
        shutil.rmtree(os.path.join(EGRESS_STATE_ROOT, deployment), ignore_errors=True)
    # The host's piece caches of this session's deployments (docs/checkpoints.md).
    from sandbox_lifecycle.adapters.providers.docker.checkpoints import default_cache_dir

    with contextlib.suppress(OSError):
        for entry in os.scandir(default_cache_dir(SESSION_PREFIX).parent):
            if entry.name.startswith(SESSION_PREFIX) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
    # Disk images and their loop devices: a host resource no engine removes.
    from tests.support.fixtures.docker import DEFAULT_DISK_DIR, release_disks

    with contextlib.suppress(OSError):
        for entry in os.scandir(DEFAULT_DISK_DIR):
            if entry.name.startswith(SESSION_PREFIX) and entry.is_dir(follow_symlinks=False):
                release_disks(entry.name)


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
def clean_pg_url(shared_pg_url: str, request: pytest.FixtureRequest) -> str:
    require_marker(request, "postgres")
    engine = sa.create_engine(shared_pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE events, sandboxes, sandbox_deadlines, sandbox_leases RESTART IDENTITY")
        conn.exec_driver_sql("UPDATE log_head SET position = 0, hash = '', previous_hash = ''")
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
