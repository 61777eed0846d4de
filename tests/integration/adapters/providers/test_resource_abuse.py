"""Resource abuse from inside a real sandbox, on runc (docker) and on runsc (gvisor): a fork bomb, a memory
bomb, a full disk, exhausted inodes, huge output. The limits hold on both; what differs is how a bomb
ends, and each runtime's ending is asserted as it is (docs/gvisor.md, "Measured"):

* runc: the host kernel stops the offending processes (the pids limit refuses the forks, the
  deadline's kill reaps them; the OOM killer kills the hoarder) and the sandbox lives on.
* runsc: the sandbox's user-space kernel is one process tree inside the container's cgroup, so it is what
  runs out: the whole sandbox stops.

Either way the host and the other sandboxes are untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerLimits, DockerProvider
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.errors import ExecTimeout, ProviderError
from sandbox_lifecycle.core.kinds import DATA_APP
from tests.support.fixtures.engines import ENGINE_PARAMS, engine_provider
from tests.support.fixtures.providers import new_sandbox_id, remove_docker_sandboxes
from tests.support.session import new_deployment

# The contract's limits: this machine has two cores and runs other suites beside this one.
LIMITS = DockerLimits(memory_bytes=512 * 1024**2, pids=256)
SMALL_DISK_MB = 64
FORK_BOMB = ["sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 8"]
MEMORY_BOMB = ["python3", "-c", "hoard = []\nwhile True: hoard.append(bytearray(64 * 1024**2))"]
BOMB_TIMEOUT_S = 15
INODE_FILL = """
import os
made = 0
try:
    while True:
        open(f"many/{made}", "x").close()
        made += 1
except OSError as exc:
    print(made, exc.strerror)
"""
# The processes of the sandbox, the asking one included: its init, its keep-alive and the exec wrapper's
# own are fewer than MANY; a bomb's leftovers are many more.
MANY = 10
COUNT_PROCESSES = "import os; print(sum(n.isdigit() for n in os.listdir('/proc')))"


@pytest.fixture(params=ENGINE_PARAMS)
def abused(request: pytest.FixtureRequest, docker_client: Any, tmp_path: Path) -> Iterator[DockerProvider]:
    """A provider of this test's own deployment on the parameter's runtime, its homes on 64 MB disks."""
    deployment = new_deployment("abuse")
    store = LocalSnapshotStore(tmp_path / "snapshots")
    provider = engine_provider(
        request.param, docker_client, store, deployment=deployment, limits=LIMITS, disk_limit_mb=SMALL_DISK_MB
    )
    try:
        yield provider
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])


def _sh(provider: DockerProvider, ref: str, script: str) -> str:
    done = provider.exec(ref, ["sh", "-c", script], timeout=60)
    assert done.exit_code == 0, done.stderr
    return done.stdout


def _processes(provider: DockerProvider, ref: str) -> int | None:
    """How many processes the sandbox has; None when it could not even start the count."""
    try:
        done = provider.exec(ref, ["python3", "-c", COUNT_PROCESSES], timeout=5)
    except ExecTimeout:  # its fork waited for a free pid
        return None
    return int(done.stdout) if done.exit_code == 0 and done.stdout.strip().isdigit() else None


def _running(client: Any, ref: str) -> bool:
    return bool(client.api.inspect_container(ref)["State"]["Running"])


@pytest.mark.docker
@pytest.mark.parametrize("bomb", [FORK_BOMB, MEMORY_BOMB], ids=["fork", "memory"])
def test_a_bomb_is_contained(
    abused: DockerProvider, docker_client: Any, bomb: list[str], request: pytest.FixtureRequest
) -> None:
    p = abused
    if p.name == "docker" and bomb is FORK_BOMB:
        # Seen in 5 of 9 runs here (a fresh and a long-lived engine): the deadline's kill
        # (adapters/providers/reap.py) stops and kills the marked processes it finds, but a bomb process
        # it did not reach forks again into the freed pids, and the sandbox's pids limit stays used up
        # (every exec then waits for a pid).
        # Not strict: it passes in the other runs; the failing ones are the defect, kept visible here.
        request.applymarker(
            pytest.mark.xfail(strict=False, reason="a fork bomb can outlive the deadline's kill on runc")
        )
    ref = p.create(new_sandbox_id(), DATA_APP)
    neighbour = p.create(new_sandbox_id(), DATA_APP)

    started = time.monotonic()
    try:
        done = p.exec(ref, bomb, timeout=BOMB_TIMEOUT_S)
        # The fork bomb's own exit code is its final sleep's, which may have found a pid to run with.
        assert done.exit_code != 0 or bomb is FORK_BOMB
        ended = f"exit {done.exit_code}"
    except ExecTimeout:
        ended = "timeout"
    except ProviderError as exc:
        assert "is not running" in str(exc)  # the sandbox was gone when the deadline's kill came
        ended = "gone"
    assert time.monotonic() - started < BOMB_TIMEOUT_S + 30  # the exec does not hang on a dead sandbox

    if p.name == "gvisor":
        # The Sentry ran out with its bomb: the whole sandbox stops.
        for _ in range(100):  # the engine notices the sandbox's exit a moment after the exec does
            if not _running(docker_client, ref):
                break
            time.sleep(0.1)
        assert not _running(docker_client, ref), ended
    else:
        # The kernel stopped the bomb (the pids limit, the deadline's kill; the OOM killer): the sandbox
        # lives on, with none of the bomb's processes left.
        assert _running(docker_client, ref)
        # As the process suites ask of any exec's leftovers: gone within 5 s (until then a count may
        # itself find no pid to fork with).
        deadline = time.monotonic() + 5
        while (left := _processes(p, ref)) is None or left >= MANY:
            assert time.monotonic() < deadline, (ended, left)
            time.sleep(0.2)
        print(f"{ended}; the bomb's processes were gone {time.monotonic() - deadline + 5:.2f}s later")
        assert _sh(p, ref, "echo alive") == "alive\n"
    assert p.exec(neighbour, ["echo", "alive"], timeout=30).stdout == "alive\n"


@pytest.mark.docker
def test_a_full_disk_and_exhausted_inodes_are_enospc_and_the_sandbox_lives_on(abused: DockerProvider) -> None:
    p = abused
    ref = p.create(new_sandbox_id(), DATA_APP)

    filled = p.exec(ref, ["dd", "if=/dev/zero", "of=big", "bs=1M", f"count={2 * SMALL_DISK_MB}"], timeout=120)
    assert filled.exit_code != 0 and "No space left on device" in filled.stderr
    assert _sh(p, ref, "rm big && echo ok > x && cat x") == "ok\n"
    made, reason = _sh(p, ref, f"mkdir many && python3 -c '{INODE_FILL}'").split(" ", 1)
    assert int(made) > 1000 and reason.strip() == "No space left on device"
    assert _sh(p, ref, "rm -r many && echo ok > y && cat y") == "ok\n"


@pytest.mark.docker
def test_huge_output_is_cut_at_the_limit(abused: DockerProvider) -> None:
    p = abused
    ref = p.create(new_sandbox_id(), DATA_APP)

    done = p.exec(ref, ["head", "-c", str(64 * 1024**2), "/dev/zero"], timeout=120)
    assert done.exit_code == 0 and done.truncated
    assert len(done.stdout_bytes) <= LIMITS.max_output_bytes
    assert _sh(p, ref, "echo alive") == "alive\n"
