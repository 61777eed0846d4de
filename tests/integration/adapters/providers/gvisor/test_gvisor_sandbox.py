"""What the gvisor provider adds to the Docker provider's contract, from inside real runsc sandboxes: the
sandbox runs on gVisor's kernel, not the host's; the Docker provider's hardening still holds; the egress
allow-list still applies; a fork bomb and a memory bomb take down their own sandbox and nothing else.

The bombs end differently from runc: there the kernel kills the offending processes and the sandbox
lives on; under runsc the sandbox's user-space kernel (one host process tree, inside the container's
cgroup) is what runs out, and the whole sandbox stops. Either way the host and the other sandboxes are
untouched, which is what these assert.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.kinds import DATA_APP
from tests.integration.adapters.providers.docker.test_egress import ALLOWED, fetch
from tests.integration.adapters.providers.gvisor.conftest import gvisor_provider
from tests.support import session
from tests.support.fixtures.providers import Harness, remove_docker_sandboxes

pytestmark = pytest.mark.docker

LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
LABEL_ROLE = "sandbox-lifecycle.role"
FORK_BOMB = ["sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 8"]
MEMORY_BOMB = ["python3", "-c", "hoard = []\nwhile True: hoard.append(bytearray(64 * 1024**2))"]
BOMB_TIMEOUT_S = 15


def _sh(provider: GVisorProvider, ref: str, script: str) -> str:
    done = provider.exec(ref, ["sh", "-c", script], timeout=60)
    assert done.exit_code == 0, done.stderr
    return done.stdout


def test_the_sandbox_runs_under_runsc_on_gvisors_kernel_not_the_hosts(
    harness: Harness, docker_client: docker.DockerClient
) -> None:
    p = harness.provider
    assert (p.name, p.capabilities.isolation) == ("gvisor", "gvisor")
    ref = p.create(harness.new_id(), DATA_APP)

    assert docker_client.api.inspect_container(ref)["HostConfig"]["Runtime"] == "runsc"
    release, log, version = _sh(p, ref, "uname -r; dmesg | head -n 1; cat /proc/version").splitlines()[:3]
    assert release != os.uname().release  # gVisor reports a kernel of its own
    assert "Starting gVisor" in log
    with open("/proc/version") as host:
        assert version != host.read().strip()
    # The egress point runs our own code and stays on the engine's default runtime.
    [egress] = docker_client.containers.list(
        filters={"label": [f"{LABEL_DEPLOYMENT}={harness.deployment}", f"{LABEL_ROLE}=egress"]}
    )
    assert egress.attrs["HostConfig"]["Runtime"] == "runc"


def test_the_docker_providers_hardening_holds_inside(
    harness: Harness, docker_client: docker.DockerClient
) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)
    p.write_files(ref, {"deep/new/blob.bin": b"x"})

    assert _sh(p, ref, "id -u; id -g").split() == ["1000", "1000"]
    # find, not stat: coreutils' stat uses a statx call the Debian package's runsc refuses (EINVAL).
    assert _sh(p, ref, "find deep -printf '%U:%G\\n'").split() == ["1000:1000"] * 3
    status = dict(line.split(":\t", 1) for line in _sh(p, ref, "cat /proc/self/status").splitlines())
    assert status["CapEff"].strip() == status["CapPrm"].strip() == "0000000000000000"
    # gVisor's /proc has no NoNewPrivs line: ask prctl(PR_GET_NO_NEW_PRIVS), and the engine.
    assert _sh(p, ref, "python3 -c 'import ctypes; print(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))'") == "1\n"
    assert "no-new-privileges:true" in docker_client.api.inspect_container(ref)["HostConfig"]["SecurityOpt"]
    # The root filesystem is read-only; the engine's socket is not there to reach.
    assert p.exec(ref, ["touch", "/usr/escape"], timeout=30).exit_code != 0
    assert p.exec(ref, ["sh", "-c", "ls /var/run/docker.sock"], timeout=30).exit_code != 0


@pytest.fixture
def egress_provider(
    docker_client: docker.DockerClient, tmp_path: Path, egress_settings: EgressSettings
) -> Iterator[GVisorProvider]:
    deployment = session.new_deployment("gvnet")
    try:
        yield gvisor_provider(docker_client, tmp_path / "snapshots", deployment, egress_settings)
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])


def test_the_egress_allow_list_applies_from_inside(
    egress_provider: GVisorProvider, allowed_port: int, other_port: int, bridge_address: str
) -> None:
    p = egress_provider
    ref = p.create(Harness.new_id(), DATA_APP)

    assert fetch(p, ref, f"http://{ALLOWED}:{allowed_port}/hi") == "200 hello /hi"
    unlisted = fetch(p, ref, f"http://unlisted.test:{allowed_port}/")
    assert unlisted.startswith("403 ") and "SANDBOX_EGRESS_ALLOW_DATA_APP" in unlisted
    raw = fetch(p, ref, f"http://{bridge_address}:{other_port}/")
    assert raw.startswith("403 ") and "raw IP" in raw
    # Around the proxy, straight to the host: no route (runsc uses the container's own namespace).
    direct = p.exec(
        ref,
        ["python3", "-c", f"import socket; socket.create_connection(({bridge_address!r}, {other_port}), 3)"],
        timeout=30,
    )
    assert direct.exit_code != 0


@pytest.mark.parametrize("bomb", [FORK_BOMB, MEMORY_BOMB], ids=["fork", "memory"])
def test_a_bomb_stops_its_own_sandbox_and_nothing_else(
    harness: Harness, docker_client: docker.DockerClient, bomb: list[str]
) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)
    neighbour = p.create(harness.new_id(), DATA_APP)

    started = time.monotonic()
    try:
        done = p.exec(ref, bomb, timeout=BOMB_TIMEOUT_S)
        assert done.exit_code != 0
    except ProviderError as exc:
        assert "is not running" in str(exc)  # the sandbox was gone when the deadline's kill came
    assert time.monotonic() - started < BOMB_TIMEOUT_S + 30  # the exec does not hang on a dead sandbox

    for _ in range(100):  # the engine notices the sandbox's exit a moment after the exec does
        if not docker_client.api.inspect_container(ref)["State"]["Running"]:
            break
        time.sleep(0.1)
    assert not docker_client.api.inspect_container(ref)["State"]["Running"]
    assert p.exec(neighbour, ["echo", "alive"], timeout=30).stdout == "alive\n"


SMALL_DISK_MB = 64
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


@pytest.fixture
def small_disk(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[GVisorProvider]:
    deployment = session.new_deployment("gvdisk")
    try:
        yield gvisor_provider(docker_client, tmp_path / "snapshots", deployment, disk_limit_mb=SMALL_DISK_MB)
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])


def test_a_full_disk_and_exhausted_inodes_are_enospc_and_the_sandbox_lives_on(
    small_disk: GVisorProvider,
) -> None:
    p = small_disk
    ref = p.create(Harness.new_id(), DATA_APP)

    filled = p.exec(ref, ["dd", "if=/dev/zero", "of=big", "bs=1M", f"count={2 * SMALL_DISK_MB}"], timeout=120)
    assert filled.exit_code != 0 and "No space left on device" in filled.stderr
    assert _sh(p, ref, "rm big && echo ok > x && cat x") == "ok\n"
    made, reason = _sh(p, ref, f"mkdir many && python3 -c '{INODE_FILL}'").split(" ", 1)
    assert int(made) > 1000 and reason.strip() == "No space left on device"
    assert _sh(p, ref, "rm -r many && echo ok > y && cat y") == "ok\n"


def test_huge_output_is_cut_at_the_limit(harness: Harness) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)

    done = p.exec(ref, ["head", "-c", str(64 * 1024**2), "/dev/zero"], timeout=120)
    assert done.exit_code == 0 and done.truncated
    assert len(done.stdout_bytes) <= 1024**2  # the provider's per-stream default
    assert _sh(p, ref, "echo alive") == "alive\n"
