"""The network of Docker sandboxes, from inside real containers, against servers this test starts.

The servers listen on the address of the engine's default bridge on this host (where the egress container
finds the host) and are reached by names pinned with SANDBOX_EGRESS_RESOLVE, as a test of the agent or of
git would reach its own servers. No allow-list here names a public host.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from sandbox_lifecycle.adapters.providers.docker.network import network_name
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import NET_DEPLOYMENT, TEST_LIMITS

pytestmark = pytest.mark.docker

ALLOWED = "allowed.test"
# Allowed, not pinned: resolves (in the egress container's /etc/hosts) to ::1, and is not in NO_PROXY.
UNPINNED = "ip6-localhost"


class _Hello(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []  # every path asked for, by any client

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def bridge_address(docker_client: docker.DockerClient) -> str:
    return bridge_host_address(docker_client.api.inspect_network("bridge"))


def _serve(address: str) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer((address, 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def allowed_port(bridge_address: str) -> Iterator[int]:
    yield from _serve(bridge_address)


@pytest.fixture(scope="module")
def other_port(bridge_address: str) -> Iterator[int]:
    """A second service of the host on its bridge address: listed nowhere."""
    yield from _serve(bridge_address)


@pytest.fixture(scope="module")
def egress_settings(
    tmp_path_factory: pytest.TempPathFactory, bridge_address: str, allowed_port: int
) -> EgressSettings:
    return EgressSettings(
        allow={
            "data-app": (f"{ALLOWED}:{allowed_port}", f"{UNPINNED}:{allowed_port}"),
            "ai-writeback": (),
        },
        resolve=(f"{ALLOWED}:{allowed_port}:{bridge_address}",),
        state_dir=tmp_path_factory.mktemp("egress-state"),
    )


def make_provider(
    client: docker.DockerClient, store: LocalSnapshotStore, egress: EgressSettings
) -> DockerProvider:
    return DockerProvider(
        DOCKER_IMAGES,
        store,
        client=client,
        environ={},
        limits=TEST_LIMITS,
        deployment=NET_DEPLOYMENT,
        disk_limit_mb=0,
        egress=egress,
    )


@pytest.fixture
def net(
    docker_client: docker.DockerClient, store: LocalSnapshotStore, egress_settings: EgressSettings
) -> DockerProvider:
    return make_provider(docker_client, store, egress_settings)


def py(provider: DockerProvider, ref: str, code: str) -> str:
    done = provider.exec(ref, ["python3", "-c", code], timeout=60)
    assert done.exit_code == 0, done.stderr
    return done.stdout


FETCH = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""

TUNNEL = """
import socket, sys
host, port = sys.argv[1], sys.argv[2]
s = socket.create_connection(("egress", 3128), timeout=10)
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n".encode())
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(4096)
status = head.split(b"\\r\\n")[0].decode()
print(status)
if " 200 " in status:
    s.sendall(f"GET /tunnel HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    print(data.split(b"\\r\\n\\r\\n", 1)[1].decode())
else:
    print(head.split(b"\\r\\n\\r\\n", 1)[1].decode())
"""

DIRECT = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(target, "CONNECTED")
    except OSError as e:
        print(target, "unreachable", type(e).__name__)
"""

RESOLVE = """
import socket
try:
    socket.getaddrinfo("allowed.test", 80)
    print("resolved")
except OSError:
    print("no")
"""

AWAIT_8000 = """
import socket, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", 8000), 1).close()
        break
    except OSError:
        time.sleep(0.1)
"""


def fetch(provider: DockerProvider, ref: str, url: str) -> str:
    return py(provider, ref, FETCH.replace("sys.argv[1]", repr(url))).strip()


def tunnel(provider: DockerProvider, ref: str, host: str, port: int) -> str:
    return py(provider, ref, TUNNEL.replace("sys.argv[1], sys.argv[2]", f"{host!r}, {str(port)!r}")).strip()


def direct(provider: DockerProvider, ref: str, *targets: str) -> dict[str, str]:
    out = py(provider, ref, DIRECT.replace("sys.argv[1:]", repr(list(targets))))
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.strip().splitlines()}


def test_an_allowed_pinned_name_answers_over_http_and_through_a_tunnel(
    net: DockerProvider, new_id: Callable[[], str], allowed_port: int
) -> None:
    sid = new_id()
    ref = net.create(sid, "data-app")
    assert fetch(net, ref, f"http://{ALLOWED}:{allowed_port}/plain?q=1") == "200 hello /plain?q=1"
    # CONNECT carries any bytes, TLS included; the server here speaks plain HTTP inside the tunnel.
    assert tunnel(net, ref, ALLOWED, allowed_port) == "HTTP/1.1 200 Connection established\nhello /tunnel"
    env = dict(
        line.split("=", 1)
        for line in py(net, ref, "import os\nfor k, v in os.environ.items(): print(f'{k}={v}')").splitlines()
        if "=" in line
    )
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert env[name] == "http://egress:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "egress,localhost,127.0.0.1"
    assert env["ANTHROPIC_BASE_URL"] == "http://egress:8081"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == env["DISABLE_TELEMETRY"] == "1"
    net.destroy(sid, ref)


def test_refusals_name_the_host_and_the_variable_that_would_allow_it(
    net: DockerProvider, new_id: Callable[[], str], allowed_port: int, other_port: int, bridge_address: str
) -> None:
    sid = new_id()
    ref = net.create(sid, "data-app")
    unlisted = fetch(net, ref, f"http://unlisted.test:{allowed_port}/")
    assert unlisted.startswith("403 ") and "unlisted.test" in unlisted
    assert "SANDBOX_EGRESS_ALLOW_DATA_APP" in unlisted
    raw = fetch(net, ref, f"http://{bridge_address}:{other_port}/")
    assert raw.startswith("403 ") and "raw IP" in raw
    metadata = fetch(net, ref, "http://169.254.169.254/latest/meta-data/")
    assert metadata.startswith("403 ") and "raw IP" in metadata
    # Listed but not pinned: it resolves to loopback, which is refused after resolution.
    loopback = fetch(net, ref, f"http://{UNPINNED}:{allowed_port}/")
    assert loopback.startswith("403 ") and "loopback" in loopback and "SANDBOX_EGRESS_RESOLVE" in loopback
    refused_tunnel = tunnel(net, ref, "unlisted.test", 443)
    assert refused_tunnel.startswith("HTTP/1.1 403") and "SANDBOX_EGRESS_ALLOW_DATA_APP" in refused_tunnel
    net.destroy(sid, ref)


def test_nothing_is_reachable_without_the_egress_point(
    net: DockerProvider, new_id: Callable[[], str], allowed_port: int, other_port: int, bridge_address: str
) -> None:
    sid = new_id()
    ref = net.create(sid, "data-app")
    seen = direct(
        net,
        ref,
        f"{bridge_address}:{allowed_port}",
        f"{bridge_address}:{other_port}",
        "169.254.169.254:80",
        "egress:3128",
    )
    assert seen.pop("egress:3128") == "CONNECTED"
    assert all(v.startswith("unreachable") for v in seen.values()), seen
    # No resolver leads out either: only the engine's own names (the egress alias) resolve.
    assert py(net, ref, RESOLVE).strip() == "no"
    net.destroy(sid, ref)


def test_url_reaches_a_server_in_the_sandbox_and_no_other_sandbox_does(
    net: DockerProvider, docker_client: docker.DockerClient, new_id: Callable[[], str]
) -> None:
    a, b = new_id(), new_id()
    ref_a, ref_b = net.create(a, "data-app"), net.create(b, "data-app")
    # A server left running in B (a detached exec straight on the engine).
    started = docker_client.api.exec_create(
        ref_b, ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"], user="1000:1000", workdir="/tmp"
    )
    docker_client.api.exec_start(started["Id"], detach=True)
    py(net, ref_b, AWAIT_8000)
    url = net.url(ref_b, 8000)
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url + "/", timeout=10) as answer:
        assert answer.status == 200
    assert net.url(ref_b, 8000) == url  # the forwarder is reused
    address_b = docker_client.api.inspect_container(ref_b)["NetworkSettings"]["Networks"][network_name(b)][
        "IPAddress"
    ]
    assert direct(net, ref_a, f"{address_b}:8000")[f"{address_b}:8000"].startswith("unreachable")
    assert fetch(net, ref_a, f"http://{address_b}:8000/").startswith("403 ")
    # Destroying B takes its forwarder and network with it.
    net.destroy(b, ref_b)
    assert docker_client.containers.list(all=True, filters={"label": f"sandbox-lifecycle.id={b}"}) == []
    assert docker_client.networks.list(names=[network_name(b)]) == []
    net.destroy(a, ref_a)


def test_the_egress_point_outlives_a_backend_restart(
    docker_client: docker.DockerClient,
    store: LocalSnapshotStore,
    egress_settings: EgressSettings,
    new_id: Callable[[], str],
    allowed_port: int,
) -> None:
    first = make_provider(docker_client, store, egress_settings)
    a = new_id()
    ref_a = first.create(a, "data-app")
    egress_id = docker_client.api.inspect_container(first.network.egress_name)["Id"]
    # A new process: a new provider instance, nothing shared in memory.
    second = make_provider(docker_client, store, egress_settings)
    b = new_id()
    ref_b = second.create(b, "data-app")
    assert docker_client.api.inspect_container(second.network.egress_name)["Id"] == egress_id
    assert fetch(second, ref_a, f"http://{ALLOWED}:{allowed_port}/a") == "200 hello /a"
    assert fetch(second, ref_b, f"http://{ALLOWED}:{allowed_port}/b") == "200 hello /b"
    second.destroy(a, ref_a)
    second.destroy(b, ref_b)


def test_the_egress_container_is_hardened_and_holds_no_key_in_its_config(
    bridge_address: str,
    docker_client: docker.DockerClient,
    store: LocalSnapshotStore,
    egress_settings: EgressSettings,
    new_id: Callable[[], str],
    tmp_path: Path,
) -> None:
    settings = EgressSettings(
        allow=egress_settings.allow,
        resolve=egress_settings.resolve,
        state_dir=egress_settings.state_dir,
        api_key="sk-ant-test-planted-key",
        upstream_url="http://127.0.0.1:9000",
    )
    provider = make_provider(docker_client, store, settings)
    sid = new_id()
    ref = provider.create(sid, "data-app")
    egress = docker_client.api.inspect_container(provider.network.egress_name)
    host = egress["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert "sk-ant-test-planted-key" not in json.dumps(egress)
    assert "sk-ant-test-planted-key" not in json.dumps(docker_client.api.inspect_container(ref))
    upstream = Path(str(settings.state_dir), "upstream.json")
    assert oct(os.stat(upstream).st_mode & 0o777) == "0o600"
    written = json.loads(upstream.read_text())
    assert written["api_key"] == "sk-ant-test-planted-key"
    # The egress container's loopback is its own: a model server on this host is reached on the bridge.
    assert written["url"] == f"http://{bridge_address}:9000"
    provider.destroy(sid, ref)


def test_the_reconciler_removes_an_orphaned_network_and_the_idle_egress_container(
    net: DockerProvider,
    docker_client: docker.DockerClient,
    new_id: Callable[[], str],
    egress_settings: EgressSettings,
) -> None:
    sid = new_id()
    ref = net.create(sid, "data-app")
    docker_client.api.remove_container(ref, force=True, v=True)  # gone behind the provider's back
    # A network younger than the cutoff may belong to a create in flight: kept.
    assert net.remove_unused_network(datetime.now(UTC) - timedelta(hours=1)) == []
    assert docker_client.networks.list(names=[network_name(sid)])
    removed = net.remove_unused_network(datetime.now(UTC) + timedelta(minutes=1))
    assert any(network_name(sid) in line for line in removed), removed
    assert any("egress container" in line for line in removed), removed
    assert docker_client.networks.list(names=[network_name(sid)]) == []
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(net.network.egress_name)
    assert not Path(str(egress_settings.state_dir), "policies", f"{sid}.json").exists()


def test_a_sweep_removes_the_egress_container_once_no_sandbox_needs_it(
    net: DockerProvider, docker_client: docker.DockerClient
) -> None:
    from sandbox_lifecycle.core.projection import Policy
    from sandbox_lifecycle.core.service import SandboxService
    from tests.support.fakes import InMemoryEventStore

    policy = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(0))
    service = SandboxService(InMemoryEventStore(), net, policy=policy)
    row = service.create("data-app", conversation_id="net-sweep")
    try:
        # A live sandbox keeps its network and the egress point.
        assert not any("egress" in line for line in service.reconcile().removed)
        docker_client.api.inspect_container(net.network.egress_name)
    finally:
        service.destroy(row.id)
    assert any("removed egress container" in line for line in service.reconcile().removed)
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(net.network.egress_name)


def test_git_and_npm_go_through_the_egress_point(
    net: DockerProvider, new_id: Callable[[], str], allowed_port: int
) -> None:
    sid = new_id()
    ref = net.create(sid, "data-app")
    base = f"http://{ALLOWED}:{allowed_port}"
    # Neither gets what it wants from a server that says hello: what counts is that they asked it.
    net.exec(ref, ["git", "ls-remote", f"{base}/repo.git"], timeout=60)
    net.exec(ref, ["npm", "view", "left-pad", "--registry", f"{base}/npm/", "--fetch-retries=0"], timeout=120)
    assert "/repo.git/info/refs?service=git-upload-pack" in _Hello.seen
    assert any(path.startswith("/npm/left-pad") for path in _Hello.seen), _Hello.seen
    net.destroy(sid, ref)


def test_concurrent_creates_keep_the_token_their_container_holds(
    net: DockerProvider,
    docker_client: docker.DockerClient,
    new_id: Callable[[], str],
    egress_settings: EgressSettings,
) -> None:

    sid = new_id()
    with ThreadPoolExecutor(4) as pool:
        refs = set(pool.map(lambda _: net.create(sid, "data-app"), range(4)))
    assert len(refs) == 1
    env = dict(e.split("=", 1) for e in docker_client.api.inspect_container(refs.pop())["Config"]["Env"])
    stored = Path(str(egress_settings.state_dir), "tokens", sid)
    assert stored.read_text().strip() == hashlib.sha256(env["ANTHROPIC_API_KEY"].encode()).hexdigest()
    net.destroy(sid, None)
    assert not stored.exists()  # a destroyed sandbox's token is revoked


def test_a_replaced_egress_point_keeps_its_name_on_every_sandbox_network(
    net: DockerProvider, new_id: Callable[[], str], allowed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another version of the egress program replaces the egress container; the new one must be
    `egress` on the networks of the sandboxes already running, or their proxy settings name nothing."""
    sid = new_id()
    ref = net.create(sid, "data-app")
    url = f"http://{ALLOWED}:{allowed_port}/again"
    assert fetch(net, ref, url) == "200 hello /again"
    before = net.network.ensure_egress()
    # What an upgrade of adapters/egress looks like to the provider: another digest of what it runs.
    monkeypatch.setattr(net.network.egress, "_config", lambda: "another-version")
    assert net.network.ensure_egress() != before  # replaced
    assert fetch(net, ref, url) == "200 hello /again"
    net.destroy(sid, ref)
