"""Bytes a command writes come back as those bytes: through the provider and through `sandboxctl exec`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.core.kinds import DATA_APP
from tests.integration.adapters.entrypoints.cli.test_cli_docker import SANDBOXCTL, base_env
from tests.support.fixtures.docker import TEST_LIMITS
from tests.support.fixtures.providers import deployment_of_env, remove_docker_sandboxes

pytestmark = pytest.mark.docker

NewId = Callable[[], str]
MIB = 1024**2


def test_exec_returns_the_raw_bytes(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    blob = os.urandom(TEST_LIMITS.max_output_bytes // 2)  # under the bound: every byte must come back
    provider.write_file(ref, "some.bin", blob)
    result = provider.exec(ref, ["bash", "-c", "cat some.bin; cat some.bin >&2"], timeout=30)
    assert (result.exit_code, result.truncated) == (0, False)
    assert result.stdout_bytes == blob and result.stderr_bytes == blob


def test_the_output_bound_counts_bytes(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    limit = TEST_LIMITS.max_output_bytes
    blob = os.urandom(3 * limit)
    provider.write_file(ref, "big.bin", blob)
    result = provider.exec(ref, ["cat", "big.bin"], timeout=30)
    assert result.truncated is True
    # Exactly the first `limit` bytes, not `limit` characters of a decoding.
    assert result.stdout_bytes == blob[:limit]


def test_sandboxctl_exec_writes_binary_stdout_unchanged(docker_client: Any, tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    created: list[str] = []

    def ctl(*argv: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [SANDBOXCTL, *argv], env=env, capture_output=True, timeout=120, check=False, **kw
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done

    try:
        sandbox_id = json.loads(ctl("create", "--kind", "data-app", "--json").stdout)["id"]
        created.append(sandbox_id)
        ctl("exec", sandbox_id, "--", "bash", "-c", f"head -c {MIB} /dev/urandom > some.bin")
        # The reference travels as text, so it does not depend on what is under test.
        digest = ctl("exec", sandbox_id, "--", "sha256sum", "some.bin").stdout.decode().split()[0]
        out = tmp_path / "out.bin"
        with out.open("wb") as sink:
            subprocess.run(
                [SANDBOXCTL, "exec", sandbox_id, "--", "cat", "some.bin"],
                env=env,
                stdout=sink,
                stderr=subprocess.PIPE,
                timeout=120,
                check=True,
            )
        assert out.stat().st_size == MIB
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    finally:
        remove_docker_sandboxes(docker_client, sandbox_ids=created, deployments=[deployment_of_env(env)])
