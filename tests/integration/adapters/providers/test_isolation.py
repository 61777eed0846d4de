"""What a sandbox sees of the host, on runc (docker) and on runsc (gvisor).

Under runc the sandbox's processes make their system calls to the host kernel: it reports the host's
release, its ``/proc/version`` and its boot id. Under runsc they reach gVisor's kernel, which reports its
own: the same checks, asserted the other way, are what shows the boundary is there (and that the checks
can tell). The Docker provider's hardening holds inside on both: uid 1000, no capabilities,
``NoNewPrivs``, a read-only root, no engine socket, none of the host's mounts or processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerLimits, DockerProvider
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.kinds import DATA_APP, HOME
from tests.support.fixtures.engines import ENGINE_PARAMS, engine_provider
from tests.support.fixtures.providers import new_sandbox_id, remove_docker_sandboxes
from tests.support.session import new_deployment

pytestmark = pytest.mark.docker

LIMITS = DockerLimits(memory_bytes=512 * 1024**2, pids=256)
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
LABEL_ROLE = "sandbox-lifecycle.role"
KERNEL_FS = ("/proc", "/dev", "/sys")
# What the engine mounts: the root, /tmp, the home volume, its init and the name files.
ENGINE_MOUNTS = {"/", "/tmp", HOME, "/usr/sbin/docker-init"} | {
    f"/etc/{n}" for n in ("resolv.conf", "hostname", "hosts")
}
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# What the sandbox reports of its kernel, as JSON. Python, not coreutils: the Debian package's runsc
# refuses the statx call of coreutils 9 (`ls`, `stat`: docs/gvisor.md).
KERNEL = """
import json, os
def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return f"error: {exc.strerror}"
print(json.dumps({"release": os.uname().release, "version": read("/proc/version"),
                  "boot_id": read("/proc/sys/kernel/random/boot_id")}))
"""
# The sandbox's own view: processes, network interfaces, mounts, capabilities, no_new_privs.
VIEW = """
import ctypes, json, os
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\\t", 1) for line in lines if ":\\t" in line)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "cap_eff": status["CapEff"].strip(), "cap_prm": status["CapPrm"].strip(),
    "no_new_privs": ctypes.CDLL(None).prctl(39, 0, 0, 0, 0),
    "pids": sorted(int(n) for n in os.listdir("/proc") if n.isdigit()),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "mounts": {line.split()[4]: line.split()[5].split(",") for line in open("/proc/self/mountinfo")},
    "socket": os.path.exists("/var/run/docker.sock") or os.path.exists("/run/docker.sock"),
}))
"""


@pytest.fixture(params=ENGINE_PARAMS)
def isolated(request: pytest.FixtureRequest, docker_client: Any, tmp_path: Path) -> Iterator[DockerProvider]:
    deployment = new_deployment("iso")
    store = LocalSnapshotStore(tmp_path / "snapshots")
    try:
        yield engine_provider(request.param, docker_client, store, deployment=deployment, limits=LIMITS)
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])


def _py(provider: DockerProvider, ref: str, code: str) -> Any:
    done = provider.exec(ref, ["python3", "-c", code], timeout=60)
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)


def _host(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_the_sandbox_sees_its_runtimes_kernel(isolated: DockerProvider, docker_client: Any) -> None:
    p = isolated
    ref = p.create(new_sandbox_id(), DATA_APP)
    seen = _py(p, ref, KERNEL)
    host = {"release": os.uname().release, "version": _host("/proc/version"), "boot_id": _host(BOOT_ID)}
    runtime = docker_client.api.inspect_container(ref)["HostConfig"]["Runtime"]

    if p.name == "docker":
        assert runtime in ("runc", "io.containerd.runc.v2")
        assert seen == host  # one kernel: the host's
        return
    assert (runtime, p.capabilities.isolation) == ("runsc", "gvisor")
    # gVisor's kernel answers: none of the three is the host's.
    assert {k: seen[k] == host[k] for k in host} == dict.fromkeys(host, False), seen
    dmesg = p.exec(ref, ["dmesg"], timeout=30)
    assert dmesg.exit_code == 0 and dmesg.stdout.startswith("[") and "Starting gVisor" in dmesg.stdout
    # The egress point runs our own code and stays on the engine's default runtime.
    deployment = docker_client.api.inspect_container(ref)["Config"]["Labels"][LABEL_DEPLOYMENT]
    [egress] = docker_client.api.containers(
        filters={"label": [f"{LABEL_DEPLOYMENT}={deployment}", f"{LABEL_ROLE}=egress"]}
    )
    assert docker_client.api.inspect_container(egress["Id"])["HostConfig"]["Runtime"] == "runc"


def test_the_docker_providers_host_escape_checks_hold(isolated: DockerProvider, docker_client: Any) -> None:
    p = isolated
    ref = p.create(new_sandbox_id(), DATA_APP)
    view = _py(p, ref, VIEW)

    assert (view["uid"], view["gid"]) == (1000, 1000)
    assert view["cap_eff"] == view["cap_prm"] == "0000000000000000"
    assert view["no_new_privs"] == 1
    assert "no-new-privileges:true" in docker_client.api.inspect_container(ref)["HostConfig"]["SecurityOpt"]
    assert view["socket"] is False
    # Its own network only: one interface besides loopback.
    assert view["interfaces"] == ["eth0", "lo"]
    # Its own processes only: a handful, not the host's hundreds (this host's pid 1 is not among them).
    assert len(view["pids"]) < 10, view["pids"]
    # No host directory is mounted in: besides the kernel's own filesystems, only what the engine makes
    # (the home volume, /tmp, the init and the name files) and the root.
    assert [m for m in view["mounts"] if not m.startswith(KERNEL_FS) and m not in ENGINE_MOUNTS] == []
    # The root filesystem is mounted read-only (runc refuses a write to it with EROFS, gVisor with
    # EACCES: it checks the permission first); the home and /tmp are writable.
    assert "ro" in view["mounts"]["/"]
    assert p.exec(ref, ["touch", "/usr/local/escape"], timeout=30).exit_code != 0
    assert p.exec(ref, ["sh", "-c", "touch ~/x /tmp/x && echo ok"], timeout=30).stdout == "ok\n"
    # Nothing the kernel guards is in reach: no mount, no raw sysrq, no module loading.
    for attempt in (
        "mount -t tmpfs none /tmp",
        "echo b > /proc/sysrq-trigger",
        "python3 -c 'import ctypes; assert ctypes.CDLL(None).syscall(175, 0, 0, 0) == 0'",  # init_module
    ):
        assert p.exec(ref, ["sh", "-c", attempt], timeout=30).exit_code != 0, attempt
