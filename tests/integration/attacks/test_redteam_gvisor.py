"""Red team: the gvisor boundary, probed from inside real runsc sandboxes (runsc runs with its own
``--network=host`` flag, which means the container's network namespace, not the machine's).

Runs only on an engine that has the runsc runtime (a fresh engine, scripts/fresh-engine.sh); skips
elsewhere. Servers here are this test's own, on loopback and on every address of this host; no
traffic leaves this host.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
from sandbox_lifecycle.adapters.providers.gvisor.runtime import runtime_status
from sandbox_lifecycle.core.kinds import DATA_APP
from tests.integration.adapters.providers.docker.test_egress import (  # noqa: F401 (fixtures)
    allowed_port,
    bridge_address,
    egress_settings,
    other_port,
)
from tests.integration.adapters.providers.gvisor.conftest import gvisor_provider
from tests.support import session
from tests.support.fixtures.providers import Harness, remove_docker_sandboxes

pytestmark = pytest.mark.docker


class _Secret(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"host-secret")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def host_everywhere() -> Iterator[int]:
    """A server on every address of this host (its loopback too): what a sandbox must never reach."""
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Secret)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gvisor(
    docker_client: docker.DockerClient,
    tmp_path: Path,
    egress_settings: object,  # noqa: F811 (the fixture imported above)
) -> Iterator[GVisorProvider]:
    if not runtime_status(docker_client).present:
        pytest.skip("the Docker engine has no runsc runtime (a fresh engine registers it)")
    deployment = session.new_deployment("rtgv")
    try:
        yield gvisor_provider(docker_client, tmp_path / "snapshots", deployment, egress_settings)  # type: ignore[arg-type]
    finally:
        remove_docker_sandboxes(docker_client, deployments=[deployment])


# Tries each host:port straight (around the proxy), 2 s each; prints {"host:port": "reached" | error}.
DIRECT = r"""
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), 2)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        out[target] = "reached" if b"host-secret" in s.recv(4096) else "connected"
    except OSError as e:
        out[target] = type(e).__name__
print(json.dumps(out))
"""


def _addresses(client: docker.DockerClient, ref: str, bridge: str) -> list[str]:
    """The gateways of the sandbox's own networks, this host on the engine's default bridge, loopback."""
    found = client.api.inspect_container(ref)["NetworkSettings"]["Networks"]
    gateways = [n.get("Gateway") for n in found.values()]
    return sorted({a for a in [*gateways, bridge, "127.0.0.1"] if a})


def test_a_runsc_sandbox_reaches_no_host_service_nor_another_sandbox(
    gvisor: GVisorProvider,
    docker_client: docker.DockerClient,
    host_everywhere: int,
    bridge_address: str,  # noqa: F811
) -> None:
    first = gvisor.create(Harness.new_id(), DATA_APP)
    second = gvisor.create(Harness.new_id(), DATA_APP)
    # The other sandbox serves on its own address; the first tries it, and this host's addresses.
    serving = threading.Thread(
        target=gvisor.exec,
        args=(second, ["timeout", "20", "python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"]),
        kwargs={"timeout": 40},
    )
    serving.start()
    [other] = [
        n["IPAddress"]
        for n in docker_client.api.inspect_container(second)["NetworkSettings"]["Networks"].values()
    ]
    targets = [f"{a}:{host_everywhere}" for a in _addresses(docker_client, first, bridge_address)] + [
        f"{other}:8000"
    ]
    done = gvisor.exec(first, ["python3", "-c", DIRECT, *targets], timeout=60)
    serving.join(40)
    assert done.exit_code == 0, done.stderr
    tried = json.loads(done.stdout)
    print(f"direct connections from a runsc sandbox: {tried}")
    assert {t: r for t, r in tried.items() if r in ("reached", "connected")} == {}, tried


# Raw and packet sockets (spoofing a source address would claim another sandbox's policy), mounts,
# block devices, the engine's socket anywhere on the file system, and host paths in the mount table.
INSIDE = r"""
import json, os, socket
out = {}
for name, args in {"raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
                   "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0)}.items():
    try:
        socket.socket(*args).close()
        out[name] = "opened"
    except OSError as e:
        out[name] = type(e).__name__
out["mount"] = os.system("mount -t tmpfs none /tmp 2>/dev/null")
import stat
devices = [f"/dev/{d}" for d in os.listdir("/dev")]
out["block_devices"] = [d for d in devices if os.path.exists(d) and stat.S_ISBLK(os.stat(d).st_mode)]
sockets = []
for root in ("/run", "/var/run", "/tmp", "/home", "/"):
    try:
        sockets += [os.path.join(root, n) for n in os.listdir(root) if n.endswith(".sock")]
    except OSError:
        pass
out["sockets"] = sockets
with open("/proc/self/mountinfo") as f:
    out["host_paths"] = [l.split()[3] for l in f if "/var/lib/" in l.split()[3] or "/run/" in l.split()[3]]
print(json.dumps(out))
"""


def test_a_runsc_sandbox_has_no_raw_sockets_mounts_devices_or_engine_socket(gvisor: GVisorProvider) -> None:
    ref = gvisor.create(Harness.new_id(), DATA_APP)
    done = gvisor.exec(ref, ["python3", "-c", INSIDE], timeout=60)
    assert done.exit_code == 0, done.stderr
    found = json.loads(done.stdout)
    print(f"inside a runsc sandbox: {found}")
    assert found["raw"] != "opened" and found["packet"] != "opened", found
    assert found["mount"] != 0, found
    assert found["block_devices"] == [] and found["sockets"] == [], found
    assert found["host_paths"] == [], found
