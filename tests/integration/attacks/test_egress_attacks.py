"""Attacks on the egress point (proxy :3128, gateway :8081) from inside real Docker sandboxes.

Every server here listens on this host's bridge address, under a made-up name that the allow-list
names and ``resolve`` pins; nothing public is reached. Each test makes its own deployment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from tests.conftest import DOCKER_IMAGES
from tests.support import session
from tests.support.fake_upstream import REAL_KEY, FakeUpstream, fake_upstream
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, TEST_LIMITS, remove_network_leftovers

pytestmark = pytest.mark.docker

DEPLOYMENT = session.new_deployment("atk")
MODEL = "model.test"


@pytest.fixture(scope="module")
def bridge_address(docker_client: docker.DockerClient) -> str:
    return bridge_host_address(docker_client.api.inspect_network("bridge"))


@pytest.fixture(scope="module")
def model(bridge_address: str) -> Iterator[FakeUpstream]:
    """The Messages API stand-in on the host's bridge address: the gateway's upstream, and an allowed
    (pinned) host of the proxy as well."""
    with fake_upstream(bridge_address) as up:
        yield up


@pytest.fixture(scope="module")
def model_port(model: FakeUpstream) -> int:
    return int(model.server.server_address[1])


@pytest.fixture(scope="module")
def provider(
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
    model: FakeUpstream,
    model_port: int,
    bridge_address: str,
) -> Iterator[DockerProvider]:
    egress = EgressSettings(
        allow={"data-app": (f"{MODEL}:{model_port}",), "ai-writeback": (f"{MODEL}:{model_port}",)},
        resolve=(f"{MODEL}:{model_port}:{bridge_address}",),
        state_dir=tmp_path_factory.mktemp("atk-egress-state"),
        upstream_url=model.url,
        api_key=REAL_KEY,
    )
    store = LocalSnapshotStore(tmp_path_factory.mktemp("atk-snapshots"))
    made = DockerProvider(
        DOCKER_IMAGES,
        store,
        client=docker_client,
        environ={},
        limits=TEST_LIMITS,
        deployment=DEPLOYMENT,
        disk_limit_mb=0,
        egress=egress,
    )
    try:
        yield made
    finally:
        remove_network_leftovers(docker_client, f"{LABEL_DEPLOYMENT}={DEPLOYMENT}")


@pytest.fixture
def sandboxes(provider: DockerProvider, new_id: Callable[[], str]) -> Iterator[Callable[[], str]]:
    made: list[tuple[str, str]] = []

    def make() -> str:
        sid = new_id()
        ref = provider.create(sid, "data-app")
        made.append((sid, ref))
        return ref

    yield make
    for sid, ref in made:
        provider.destroy(sid, ref)


def py(provider: DockerProvider, ref: str, code: str, *args: str, timeout: int = 120) -> str:
    done = provider.exec(ref, ["python3", "-c", code, *args], timeout=timeout)
    assert done.exit_code == 0, done.stderr
    return done.stdout


def egress_container(client: docker.DockerClient) -> dict[str, Any]:
    [found] = client.api.containers(
        filters={"label": [f"{LABEL_DEPLOYMENT}={DEPLOYMENT}", "sandbox-lifecycle.role=egress"]}
    )
    return dict(client.api.inspect_container(found["Id"]))


# A bystander's allowed calls, one after another, each timed inside its sandbox: through the proxy
# (absolute-form http:// to the pinned model host) or to the gateway. Prints [[status, seconds], ...].
TIMED = r"""
import json, os, socket, sys, time
via, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
token = os.environ["ANTHROPIC_API_KEY"]
out = []
for _ in range(int(sys.argv[4])):
    started = time.monotonic()
    try:
        if via == "proxy":
            s = socket.create_connection(("egress", 3128), timeout=30)
            head = f"GET http://{host}:{port}/v1/models HTTP/1.1\r\nhost: {host}:{port}\r\nx-api-key: x\r\n"
        else:
            s = socket.create_connection(("egress", 8081), timeout=30)
            head = f"GET /v1/models HTTP/1.1\r\nhost: e\r\nx-api-key: {token}\r\nconnection: close\r\n"
        s.sendall(head.encode() + b"\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        status = int(data.split(b" ")[1])
    except Exception as e:
        status = type(e).__name__
    out.append([status, round(time.monotonic() - started, 3)])
    time.sleep(0.3)
print(json.dumps(out))
"""

# Opens and drops connections to the proxy as fast as it can, from PROCS processes, for SECONDS:
# never a request, only the accept queue. Prints the connections made.
ACCEPT_FLOOD = r"""
import json, os, socket, sys, time
procs, seconds = int(sys.argv[1]), float(sys.argv[2])
address = socket.getaddrinfo("egress", 3128, socket.AF_INET)[0][4]
r, w = os.pipe()
for _ in range(procs):
    if os.fork() == 0:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            try:
                s.connect(address)
                n += 1
            except OSError:
                pass
            s.close()
        os.write(w, f"{n}\n".encode())
        os._exit(0)
total = 0
for _ in range(procs):
    os.wait()
os.close(w)
print(sum(int(x) for x in os.read(r, 65536).split()))
"""


@pytest.mark.slow
def test_a_connection_flood_does_not_stall_another_sandboxs_allowed_request(
    provider: DockerProvider,
    docker_client: docker.DockerClient,
    sandboxes: Callable[[], str],
    model_port: int,
) -> None:
    attackers = [sandboxes()]
    bystander = sandboxes()
    baseline = json.loads(py(provider, bystander, TIMED, "proxy", MODEL, str(model_port), "3"))
    assert [status for status, _ in baseline] == [200] * 3, baseline
    with ThreadPoolExecutor(len(attackers)) as pool:
        floods = [pool.submit(py, provider, a, ACCEPT_FLOOD, "4", "20", timeout=120) for a in attackers]
        time.sleep(3.0)
        latencies = json.loads(py(provider, bystander, TIMED, "proxy", MODEL, str(model_port), "10"))
        made = [int(f.result(120)) for f in floods]
    print(f"connections made {made}; bystander baseline {baseline}; during the flood {latencies}")
    assert [status for status, _ in latencies] == [200] * len(latencies), latencies
    assert max(seconds for _, seconds in latencies) < 1.0, latencies


# CONNS connections to the gateway, each a POST /v1/messages with the sandbox's own token and a chunked
# body of 2-byte chunks, sent for SECONDS: every chunk costs the gateway's one loop a size line, a read
# and a CRLF check (and, while a body is held whole, a bytes object of its own). Prints the bytes sent.
TINY_CHUNKS = r"""
import os, socket, sys, threading, time
conns, seconds = int(sys.argv[1]), float(sys.argv[2])
token = os.environ["ANTHROPIC_API_KEY"]
piece = b"2\r\nab\r\n" * 8192
sent = [0] * conns
def one(i):
    end = time.monotonic() + seconds
    try:
        s = socket.create_connection(("egress", 8081), timeout=30)
        head = f"POST /v1/messages HTTP/1.1\r\nhost: e\r\nx-api-key: {token}\r\n"
        head += "transfer-encoding: chunked\r\n"
        s.sendall(head.encode() + b"\r\n")
        while time.monotonic() < end:
            s.sendall(piece)
            sent[i] += len(piece)
        s.close()
    except OSError:
        pass
threads = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
for t in threads: t.start()
for t in threads: t.join(seconds + 60)
print(sum(sent))
"""


@pytest.mark.slow
def test_tiny_chunks_to_the_gateway_do_not_stall_another_sandboxs_model_call(
    provider: DockerProvider,
    docker_client: docker.DockerClient,
    sandboxes: Callable[[], str],
    model_port: int,
) -> None:
    attacker, bystander = sandboxes(), sandboxes()
    before = egress_container(docker_client)
    with ThreadPoolExecutor(1) as pool:
        flood = pool.submit(py, provider, attacker, TINY_CHUNKS, "32", "20", timeout=120)
        time.sleep(3.0)
        gateway = json.loads(py(provider, bystander, TIMED, "gateway", MODEL, str(model_port), "6"))
        proxy = json.loads(py(provider, bystander, TIMED, "proxy", MODEL, str(model_port), "6"))
        sent = int(flood.result(120))
    after = egress_container(docker_client)
    print(f"attacker sent {sent} bytes; bystander via gateway {gateway}; via proxy {proxy}")
    assert not after["State"]["OOMKilled"] and after["RestartCount"] == before["RestartCount"]
    assert [status for status, _ in gateway + proxy] == [200] * 12, (gateway, proxy)
    assert max(seconds for _, seconds in gateway + proxy) < 1.0, (gateway, proxy)


# Raw requests to the proxy from the sandbox, each a Python bytes literal; prints [status, refused by
# the proxy itself] per request.
RAW_PROXY = r"""
import ast, json, socket, sys
out = []
for text in sys.argv[1:]:
    s = socket.create_connection(("egress", 3128), timeout=20)
    s.sendall(ast.literal_eval(text))
    s.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
    except OSError:
        pass
    status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.") else 0
    out.append([status, b"x-sandbox-egress: refused" in data.lower()])
print(json.dumps(out))
"""


def test_address_and_framing_tricks_are_refused_by_the_proxy(
    provider: DockerProvider,
    docker_client: docker.DockerClient,
    sandboxes: Callable[[], str],
    model: FakeUpstream,
    model_port: int,
    bridge_address: str,
) -> None:
    ref = sandboxes()
    p = model_port
    m = f"{MODEL}:{p}"
    refused = [
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT [::ffff:169.254.169.254]:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT [::ffff:a9fe:a9fe]:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"CONNECT {bridge_address}:{p} HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT 0x7f.1:8081 HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT 2130706433:3128 HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT 0177.0.0.1:8081 HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT localhost:8081 HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT egress:8081 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"CONNECT {MODEL}:{p + 1} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"CONNECT {MODEL}:0{p} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"CONNECT {MODEL}%2e:{p} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"CONNECT {MODEL}:{p}@169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET http://{m}@169.254.169.254/ HTTP/1.1\r\nHost: {m}\r\n\r\n",
        f"GET http://169.254.169.254\\@{m}/ HTTP/1.1\r\nHost: {m}\r\n\r\n",
        f"GET http://169.254.169.254#@{m}/ HTTP/1.1\r\nHost: {m}\r\n\r\n",
        f"GET https://{m}/ HTTP/1.1\r\nHost: {m}\r\n\r\n",
        f"GET /v1/models HTTP/1.1\r\nHost: {m}\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost: {m}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost: {m}\r\nX-A: 1\r\n x-api-key: s\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost: {m}\nX-A: 1\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost: {m}\r\nX-A: 1\rX-B: 2\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost: {m}\r\nHost: 169.254.169.254\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost: {m}\r\nContent-Length: 0\r\n\r\n"
        "GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        f"POST http://{m}/ HTTP/1.1\r\nHost: {m}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        f"GET http://{m}/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost: {m}\r\nContent-Length: +1\r\n\r\nx",
        f"GET http://{m}/ HTTP/2.0\r\nHost: {m}\r\n\r\n",
        f"GET http://{m}/\x00 HTTP/1.1\r\nHost: {m}\r\n\r\n",
        f"GET http://{m}/ HTTP/1.1\r\nHost : {m}\r\n\r\n",
    ]
    seen = len(model.seen)
    answers = json.loads(py(provider, ref, RAW_PROXY, *(repr(r.encode()) for r in refused)))
    wrong = {r: a for r, a in zip(refused, answers, strict=True) if not (400 <= a[0] < 600 and a[1])}
    assert wrong == {}, wrong
    assert len(model.seen) == seen
    # The same proxy takes the honest forms: it was not refusing everything.
    ok = [
        f"GET http://{m}/v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        f"GET http://{MODEL.upper()}.:{p}/v1/models HTTP/1.0\r\n\r\n",
    ]
    statuses = json.loads(py(provider, ref, RAW_PROXY, *(repr(r.encode()) for r in ok)))
    assert [status for status, _ in statuses] == [200, 200]
    # The Host that arrives is the name the proxy checked (a forged Host header is replaced), at most
    # with the client's trailing dot kept.
    assert [s.headers.get("host", "").replace(".:", ":") for s in model.seen[seen:]] == [m, m]
    logs = docker_client.api.logs(egress_container(docker_client)["Id"]).decode(errors="replace")
    assert "Traceback" not in logs and " failed: " not in logs, logs[-3000:]
