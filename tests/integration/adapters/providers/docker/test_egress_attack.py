"""Attacks on the egress proxy from inside real sandboxes, on runc (docker) and runsc (gvisor) (issue 20:
N.1 and the proxy's LOW items).

Sandbox A attacks, sandbox B is the bystander whose allowed requests must keep answering. The only
servers are the ones this module starts on the engine's default bridge address, reached by a made-up
name pinned there; no allow-list names a public host. Every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, RUN_PREFIX, TEST_LIMITS, remove_network_leftovers
from tests.support.fixtures.egress_attacks import py
from tests.support.fixtures.engines import engine_provider

pytestmark = pytest.mark.docker

ALLOWED = "allowed.test"
DEPLOYMENT = f"{RUN_PREFIX}-atk"


class Recorder:
    """A tiny origin on the bridge address: answers every request ``ok`` and keeps the raw bytes of each
    connection, so a test can see exactly what the proxy passed on."""

    def __init__(self, address: str) -> None:
        self.server = socket.create_server((address, 0), backlog=128)
        self.server.settimeout(0.5)
        self.port = int(self.server.getsockname()[1])
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        with conn, contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data and len(data) < 1 << 20:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.received.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()


@pytest.fixture(scope="module")
def origin(bridge_address: str) -> Iterator[Recorder]:
    recorder = Recorder(bridge_address)
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
def attack_settings(
    engine: str, tmp_path_factory: pytest.TempPathFactory, bridge_address: str, origin: Recorder
) -> Iterator[EgressSettings]:
    state = tmp_path_factory.mktemp(f"egress-attack-state-{engine}")
    yield EgressSettings(
        allow={"data-app": (f"{ALLOWED}:{origin.port}",), "ai-writeback": ()},
        resolve=(f"{ALLOWED}:{origin.port}:{bridge_address}",),
        state_dir=state,
    )


@pytest.fixture(scope="module")
def net_client(engine: str, docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    yield docker_client
    # This module's deployment only: its egress container and any network a failed test left.
    remove_network_leftovers(docker_client, f"{LABEL_DEPLOYMENT}={DEPLOYMENT}-{engine}")


@pytest.fixture
def net(
    engine: str,
    net_client: docker.DockerClient,
    store: LocalSnapshotStore,
    attack_settings: EgressSettings,
) -> DockerProvider:
    """The attacked provider on the runtime of the module's ``engine`` (runc, runsc)."""
    return engine_provider(
        engine,
        net_client,
        store,
        deployment=f"{DEPLOYMENT}-{engine}",
        limits=TEST_LIMITS,
        egress=attack_settings,
        disk_limit_mb=0,
    )


# Inside B: one allowed request through the proxy, its status and how long it took.
TIMED_FETCH = """
import time, urllib.request, urllib.error
start = time.monotonic()
try:
    with urllib.request.urlopen(URL, timeout=5) as r:
        status = r.status
except urllib.error.HTTPError as e:
    status = e.code
except OSError as e:
    status = type(e).__name__
print(status, round(time.monotonic() - start, 3))
"""

# Inside A, detached: COUNT connections, each sent half a request line, held HOLD seconds, then closed.
HALF_OPEN = """
import socket, time
held, refused = [], 0
for _ in range(COUNT):
    try:
        s = socket.create_connection(("egress", 3128), timeout=3)
        s.sendall(b"GET http://allowed.test:PORT/ha")
        held.append(s)
    except OSError:
        refused += 1
open("/tmp/attack-ready", "w").write(f"{len(held)} {refused}")
time.sleep(HOLD)
for s in held:
    s.close()
open("/tmp/attack-done", "w").write("done")
"""

AWAIT_FILE = """
import os, time
for _ in range(300):
    if os.path.exists(PATH):
        print(open(PATH).read())
        break
    time.sleep(0.1)
"""

# Inside A: each payload on a connection of its own, sent in pieces with a pause between them (the
# proxy must judge the head as a whole, however it arrives); prints the first line of each answer.
RAW = """
import base64, socket, time
for piece_list in PAYLOADS:
    s = socket.create_connection(("egress", 3128), timeout=5)
    try:
        for piece in piece_list:
            s.sendall(base64.b64decode(piece))
            time.sleep(0.2)
        answer = b""
        while b"\\r\\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        print(answer.split(b"\\r\\n")[0].decode("latin-1") or "CLOSED")
    except OSError as e:
        print("ERROR", type(e).__name__)
    finally:
        s.close()
"""


def timed_fetch(provider: DockerProvider, ref: str, url: str) -> tuple[str, float]:
    status, elapsed = py(provider, ref, TIMED_FETCH.replace("URL", repr(url))).split()
    return status, float(elapsed)


def start_detached(client: docker.DockerClient, ref: str, code: str) -> None:
    started = client.api.exec_create(ref, ["python3", "-c", code], user="1000:1000", workdir="/tmp")
    client.api.exec_start(started["Id"], detach=True)


def await_file(provider: DockerProvider, ref: str, path: str) -> str:
    return py(provider, ref, AWAIT_FILE.replace("PATH", repr(path))).strip()


def test_half_open_connections_of_one_sandbox_do_not_stop_another(
    net: DockerProvider, net_client: docker.DockerClient, new_id: Callable[[], str], origin: Recorder
) -> None:
    a, b = new_id(), new_id()
    ref_a, ref_b = net.create(a, "data-app"), net.create(b, "data-app")
    url = f"http://{ALLOWED}:{origin.port}/b"
    assert timed_fetch(net, ref_b, url)[0] == "200"
    attack = HALF_OPEN.replace("COUNT", "300").replace("PORT", str(origin.port)).replace("HOLD", "8")
    start_detached(net_client, ref_a, attack)
    assert await_file(net, ref_a, "/tmp/attack-ready")  # A holds its connections
    during = [timed_fetch(net, ref_b, url) for _ in range(3)]
    assert all(status == "200" and elapsed < 1.0 for status, elapsed in during), during
    assert await_file(net, ref_a, "/tmp/attack-done") == "done"
    after = [timed_fetch(net, ref_b, url) for _ in range(3)]
    assert all(status == "200" and elapsed < 1.0 for status, elapsed in after), after
    # The egress point says it is healthy, and it is: the probe goes through the proxy's own path.
    assert net.network.probe_egress().ok
    net.destroy(a, ref_a)
    net.destroy(b, ref_b)


def _pieces(*parts: bytes) -> list[str]:
    return [base64.b64encode(p).decode() for p in parts]


def test_heads_a_strict_parser_refuses_never_reach_the_upstream(
    net: DockerProvider, new_id: Callable[[], str], origin: Recorder
) -> None:
    sid = new_id()
    ref = net.create(sid, "data-app")
    target = f"http://{ALLOWED}:{origin.port}"
    host = f"Host: {ALLOWED}:{origin.port}\r\n".encode()

    def get(path: str) -> bytes:
        return f"GET {target}{path} HTTP/1.1\r\n".encode()

    cases = {
        "bare LF": _pieces(get("/lf") + host + b"X-A: 1\nHost: evil.test\r\n\r\n"),
        "bare CR": _pieces(get("/cr") + host + b"X-A: 1\rHost: evil.test\r\n\r\n"),
        "obs-fold": _pieces(get("/fold") + host + b"X-A: 1\r\n folded\r\n\r\n"),
        "pipelined": _pieces(get("/pipe1") + host + b"\r\n" + get("/pipe2") + host + b"\r\n"),
        "CL and TE": _pieces(
            get("/clte") + host + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        "two lengths": _pieces(get("/cl2") + host + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        "70 KB head in two reads": _pieces(
            get("/big") + host + b"X-Pad: " + b"a" * 40_000 + b"\r\n",
            b"X-Pad2: " + b"b" * 30_000 + b"\r\n\r\n",
        ),
        "NUL in the target": _pieces(f"GET {target}/nul\x00x HTTP/1.1\r\n".encode() + host + b"\r\n"),
    }
    before = len(origin.received)
    out = py(net, ref, RAW.replace("PAYLOADS", repr(list(cases.values())))).strip().splitlines()
    answers = dict(zip(cases, out, strict=True))
    for name, line in answers.items():
        status = 431 if name.startswith("70 KB") else 400
        assert line.startswith(f"HTTP/1.1 {status} "), (name, line)
    forwarded = origin.received[before:]
    assert forwarded == [], forwarded
    # A well-formed request still goes through, with the proxy's Host and nothing else.
    ok = py(net, ref, RAW.replace("PAYLOADS", repr([_pieces(get("/fine") + host + b"X-A: 1\r\n\r\n")])))
    assert ok.strip() == "HTTP/1.1 200 OK"
    assert origin.received[-1].count(b"Host:") == 1
    net.destroy(sid, ref)


# Run inside the egress container: stop the proxy's process as a crashed or wedged one would be.
FREEZE = """
import os, signal
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"egress.main" in cmd and b"proxy" in cmd:
            os.kill(int(pid), signal.SIGSTOP)
            print(pid)
"""


def test_a_dead_proxy_is_found_and_restarted_before_a_sandbox_is_handed_out(
    net: DockerProvider, net_client: docker.DockerClient, new_id: Callable[[], str], origin: Recorder
) -> None:
    a = new_id()
    ref_a = net.create(a, "data-app")
    url = f"http://{ALLOWED}:{origin.port}/a"
    assert timed_fetch(net, ref_a, url)[0] == "200"
    egress = net.network.egress_name
    frozen = net_client.containers.get(egress).exec_run(["python3", "-c", FREEZE])
    assert frozen.exit_code == 0 and frozen.output.strip(), frozen.output
    probe = net.network.probe_egress()
    assert not probe.ok, probe
    # The next create finds the proxy dead, restarts it, and hands out a sandbox whose way out works;
    # A, live all along, keeps its policy.
    c = new_id()
    ref_c = net.create(c, "data-app")
    assert timed_fetch(net, ref_c, f"http://{ALLOWED}:{origin.port}/c")[0] == "200"
    assert timed_fetch(net, ref_a, url)[0] == "200"
    assert net.network.probe_egress().ok
    net.destroy(a, ref_a)
    net.destroy(c, ref_c)
