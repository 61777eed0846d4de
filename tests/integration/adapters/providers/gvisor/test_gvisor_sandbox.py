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

from sandbox_lifecycle.adapters.composition.settings import EgressSettings
from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.kinds import DATA_APP
from tests import session
from tests.docker.test_egress import ALLOWED, fetch
from tests.integration.adapters.providers.gvisor.conftest import gvisor_provider
from tests.providers.conftest import Harness, remove_docker_sandboxes

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
