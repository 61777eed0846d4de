"""Faults of the egress container under real turns (found by bench/faults_bench.py, docs/reliability.md).

A killed egress container is not restarted by the engine (``docker kill`` counts as a manual stop for
``unless-stopped``); the next create or resume starts it again. If a sandbox was suspended meanwhile, its
network was removed while the stopped egress container was still attached to it, and the engine then
refuses to start the egress container ("network ... not found"). That error must not be taken for a lost
sandbox: a suspended sandbox's workspace is in its snapshot, and the turn must get it back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.service import SandboxService
from tests.support import session

pytestmark = [pytest.mark.docker, pytest.mark.slow]


DEPLOYMENT = session.new_deployment("egfault")


@pytest.fixture
def service(docker_engine: docker.DockerClient, tmp_path: Path) -> Iterator[SandboxService]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "E2B_", "S3_"))},
        "SANDBOX_PROVIDER": "docker",
        "SANDBOX_DATA_DIR": str(tmp_path),
        "SANDBOX_DEPLOYMENT": DEPLOYMENT,
        "SANDBOX_DISK_LIMIT_MB": "0",
        # No public host: nothing here goes out, and the allow-lists say so.
        "SANDBOX_EGRESS_ALLOW_DATA_APP": "",
        "SANDBOX_EGRESS_ALLOW_AI_WRITEBACK": "",
    }
    built = build_service(env)
    try:
        yield built
    finally:
        for row in built.list():
            if row.state != lc.EXPIRED:
                try:
                    built.destroy(row.id)
                except Exception as exc:
                    print(f"cleanup: destroying {row.id} failed: {exc}")


def test_a_resume_after_the_egress_container_was_killed_and_a_network_removed_keeps_the_workspace(
    service: SandboxService, docker_engine: docker.DockerClient
) -> None:
    with service.turn("conv-a", "data-app") as sbx:
        sbx.write_file("kept.txt", "the workspace of conv-a")
        a = sbx.id
    with service.turn("conv-b", "data-app") as sbx:
        assert sbx.exec(["true"]).exit_code == 0
        docker_engine.api.kill(f"sandbox-lifecycle-egress-{DEPLOYMENT}")
        # Leaving the turn suspends conv-b: its network goes while the egress container is stopped.

    with service.turn("conv-a", "data-app") as sbx:
        assert sbx.id == a, "conv-a got a new sandbox: its workspace was given up"
        assert sbx.read_file("kept.txt") == b"the workspace of conv-a"
        assert sbx.exec(["true"]).exit_code == 0
