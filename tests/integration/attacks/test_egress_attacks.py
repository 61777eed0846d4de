"""Attacks on the egress point (proxy :3128, gateway :8081) from inside real sandboxes, on runc (docker)
and on runsc (gvisor).

Every server here listens on this host's bridge address, under a made-up name that the allow-list
names and ``resolve`` pins; nothing public is reached. The provider of each runtime has a deployment
of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures.egress_attacks import attack_provider_on, egress_container, py

pytestmark = pytest.mark.docker

MODEL = "model.test"


@pytest.fixture(scope="module")
def attack_provider(
    engine: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
    model: FakeUpstream,
    model_port: int,
    bridge_address: str,
) -> Iterator[DockerProvider]:
    """The model stand-in is the gateway's upstream and the proxy's one allowed (pinned) host."""
    with attack_provider_on(
        engine,
        docker_client,
        tmp_path_factory,
        model,
        role="atk",
        allow=(f"{MODEL}:{model_port}",),
        resolve=(f"{MODEL}:{model_port}:{bridge_address}",),
    ) as made:
        yield made


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
    attack_provider: DockerProvider,
    docker_client: docker.DockerClient,
    sandboxes: Callable[[], str],
    model_port: int,
) -> None:
    attackers = [sandboxes()]
    bystander = sandboxes()
    baseline = json.loads(py(attack_provider, bystander, TIMED, "proxy", MODEL, str(model_port), "3"))
    assert [status for status, _ in baseline] == [200] * 3, baseline
    with ThreadPoolExecutor(len(attackers)) as pool:
        floods = [
            pool.submit(py, attack_provider, a, ACCEPT_FLOOD, "4", "20", timeout=120) for a in attackers
        ]
        time.sleep(3.0)
        latencies = json.loads(py(attack_provider, bystander, TIMED, "proxy", MODEL, str(model_port), "10"))
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
    attack_provider: DockerProvider,
    docker_client: docker.DockerClient,
    sandboxes: Callable[[], str],
    model_port: int,
) -> None:
    attacker, bystander = sandboxes(), sandboxes()
    before = egress_container(docker_client, bystander)
    with ThreadPoolExecutor(1) as pool:
        flood = pool.submit(py, attack_provider, attacker, TINY_CHUNKS, "32", "20", timeout=120)
        time.sleep(3.0)
        gateway = json.loads(py(attack_provider, bystander, TIMED, "gateway", MODEL, str(model_port), "6"))
        proxy = json.loads(py(attack_provider, bystander, TIMED, "proxy", MODEL, str(model_port), "6"))
        sent = int(flood.result(120))
    after = egress_container(docker_client, bystander)
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
    attack_provider: DockerProvider,
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
    answers = json.loads(py(attack_provider, ref, RAW_PROXY, *(repr(r.encode()) for r in refused)))
    wrong = {r: a for r, a in zip(refused, answers, strict=True) if not (400 <= a[0] < 600 and a[1])}
    assert wrong == {}, wrong
    assert len(model.seen) == seen
    # The same proxy takes the honest forms: it was not refusing everything.
    ok = [
        f"GET http://{m}/v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        f"GET http://{MODEL.upper()}.:{p}/v1/models HTTP/1.0\r\n\r\n",
    ]
    statuses = json.loads(py(attack_provider, ref, RAW_PROXY, *(repr(r.encode()) for r in ok)))
    assert [status for status, _ in statuses] == [200, 200]
    # The Host that arrives is the name the proxy checked (a forged Host header is replaced), at most
    # with the client's trailing dot kept.
    assert [s.headers.get("host", "").replace(".:", ":") for s in model.seen[seen:]] == [m, m]
    logs = docker_client.api.logs(egress_container(docker_client, ref)["Id"]).decode(errors="replace")
    assert "Traceback" not in logs and " failed: " not in logs, logs[-3000:]
