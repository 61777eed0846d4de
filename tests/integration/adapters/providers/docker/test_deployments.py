"""A copied database is another deployment, and never acts on the original's sandboxes.

End to end through the composition root on the Docker provider: a SQLite log copied to a new path (a
restored backup) derives another SANDBOX_DEPLOYMENT, yet holds the original's sandbox ids and container
refs. Its exec, suspend and timers must leave the original's container running with its files intact.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.errors import ForeignSandbox, SandboxError
from tests.integration.adapters.entrypoints.cli.test_cli_docker import base_env
from tests.support.fixtures.providers import deployment_of_env, new_deployment, remove_docker_sandboxes

pytestmark = pytest.mark.docker


def _copy_sqlite(source: Path, target: Path) -> None:
    """What restoring a backup gives: the same log at another path (the backup API copies the WAL too)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def test_a_copied_database_never_touches_the_originals_sandbox(docker_client: Any, tmp_path: Path) -> None:
    env_a, env_b = base_env(tmp_path / "a"), base_env(tmp_path / "b")
    # Two deployments, as a copy's other database URL would derive (named with this run's prefix).
    env_a["SANDBOX_DEPLOYMENT"], env_b["SANDBOX_DEPLOYMENT"] = new_deployment(), new_deployment()
    original = build_service(env_a)
    row = original.create("data-app", "conv-1")
    created = [row.id]
    try:
        original.write_file(row.id, "keep.txt", b"original")
        ref = original.get(row.id).provider_ref
        [container] = docker_client.containers.list(filters={"name": f"sbx-{row.id}"})
        assert container.id == ref

        _copy_sqlite(tmp_path / "a" / "sandbox.db", tmp_path / "b" / "sandbox.db")
        copy = build_service(env_b)
        assert copy.get(row.id).provider_ref == ref  # the copy holds the original's ref ...

        raised: list[BaseException] = []
        for call in (
            lambda: copy.exec(row.id, ["touch", "/home/sandbox/app/copy-was-here"], timeout=10),
            lambda: copy.write_file(row.id, "keep.txt", b"overwritten by the copy"),
            lambda: copy.suspend(row.id),
        ):
            with pytest.raises(SandboxError) as caught:
                call()
            raised.append(caught.value)
        # ... and is refused as another deployment, or (once the service recorded that) a sandbox it
        # cannot use; never a workspace it wrote to.
        assert isinstance(raised[0], ForeignSandbox), raised[0]

        # The copy's timers: idle (suspend) and, a month on, whatever it would GC; then the reconciler.
        far = datetime.now(UTC) + timedelta(days=30)
        for now in (far, far + timedelta(days=30)):
            try:
                copy.sweep(now)
            except SandboxError as exc:
                raised.append(exc)

        container.reload()
        assert container.status == "running"
        assert original.get(row.id).provider_ref == ref
        assert original.read_file(row.id, "keep.txt") == b"original"
        with pytest.raises(FileNotFoundError):
            original.read_file(row.id, "copy-was-here")
        assert original.exec(row.id, ["cat", "keep.txt"], timeout=10).stdout == "original"
        # The copy's record is not left stuck: the first refusal expired it, saying why, and nothing
        # after that reached the provider.
        copied = copy.get(row.id)
        assert (copied.state, copied.expired_reason) == ("expired", "foreign_deployment")
        assert all(not isinstance(e, ForeignSandbox) for e in raised[1:]), raised

        # The original still owns its lifecycle.
        original.suspend(row.id)
        assert original.get(row.id).state == "suspended"
        assert docker_client.containers.list(all=True, filters={"name": f"sbx-{row.id}"}) == []
        original.destroy(row.id)
    finally:
        deployments = [deployment_of_env(env_a), deployment_of_env(env_b)]
        remove_docker_sandboxes(docker_client, sandbox_ids=created, deployments=deployments)
