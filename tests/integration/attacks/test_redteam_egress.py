"""Red team: the live network policy (``set_egress``) attacked from inside real Docker sandboxes.

The host opened here is a keep-alive HTTP server of this test on the engine's default bridge address,
reached by a name of the reserved .test domain pinned with SANDBOX_EGRESS_RESOLVE; the kinds' lists do
not name it, so a sandbox reaches it only while set_egress allows it. Every loop is bounded.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.errors import EgressRefused
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.conftest import DOCKER_IMAGES
from tests.integration.attacks.test_egress_attacks import ACCEPT_FLOOD
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, RUN_PREFIX, TEST_LIMITS, remove_network_leftovers

pytestmark = pytest.mark.docker

OPENED = "opened.test"
SLOW = "slow.test"
DEPLOYMENT = f"{RUN_PREFIX}-rte"
POLICY = Policy(idle_timeout=timedelta(hours=1), retention=timedelta(days=1), lease=timedelta(minutes=5))


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one tunnel carries many requests

    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(docker_client: docker.DockerClient) -> Iterator[tuple[str, int]]:
    address = bridge_host_address(docker_client.api.inspect_network("bridge"))
    server = http.server.ThreadingHTTPServer((address, 0), _Hello)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield address, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


class SlowUpstream:
    """A server whose listen queue is kept full, so that a connect to it takes a SYN retransmit (about a
    second) until :meth:`release` accepts the queued ones; then it answers "hello" to what it reads."""

    def __init__(self, address: str) -> None:
        self.server = socket.socket()
        self.server.bind((address, 0))
        self.server.listen(0)
        self.port = int(self.server.getsockname()[1])
        # Fill the accept queue (a listen(0) queue holds one; two to be sure) so that new SYNs are dropped.
        self.fillers = []
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((address, self.port))
            self.fillers.append(filler)
        time.sleep(0.2)

    def release(self) -> None:
        def serve() -> None:
            self.server.settimeout(15)
            with contextlib.suppress(OSError):
                for _ in range(6):  # the fillers and the proxy's connection, at most
                    conn, _ = self.server.accept()
                    threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        conn.settimeout(15)
        with conn, contextlib.suppress(OSError):
            while conn.recv(4096):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    def close(self) -> None:
        for sock in [*self.fillers, self.server]:
            sock.close()


@pytest.fixture
def slow(docker_client: docker.DockerClient) -> Iterator[SlowUpstream]:
    made = SlowUpstream(bridge_host_address(docker_client.api.inspect_network("bridge")))
    try:
        yield made
    finally:
        made.close()


@contextlib.contextmanager
def _service(
    client: docker.DockerClient,
    tmp_path: Path,
    resolve: tuple[str, ...],
    kind_allows: tuple[str, ...],
    url: str,
) -> Iterator[SandboxService]:
    egress = EgressSettings(
        allow={"data-app": kind_allows, "ai-writeback": kind_allows},
        resolve=resolve,
        state_dir=tmp_path / "egress-state",
    )
    provider = DockerProvider(
        DOCKER_IMAGES,
        LocalSnapshotStore(tmp_path / "snapshots"),
        client=client,
        environ={},
        limits=TEST_LIMITS,
        deployment=DEPLOYMENT,
        disk_limit_mb=0,
        egress=egress,
    )
    store = open_store(url)
    try:
        yield SandboxService(store, provider, policy=POLICY)
    finally:
        store.close()
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_DEPLOYMENT}={DEPLOYMENT}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        remove_network_leftovers(client, f"{LABEL_DEPLOYMENT}={DEPLOYMENT}")


@pytest.fixture
def service(
    docker_client: docker.DockerClient,
    tmp_path: Path,
    served: tuple[str, int],
    slow: SlowUpstream,
    clean_sqlite_url: str,
) -> Iterator[SandboxService]:
    """The kinds reach nothing: a sandbox reaches the test's hosts only while set_egress allows them."""
    address, port = served
    resolve = (f"{OPENED}:{port}:{address}", f"{SLOW}:{slow.port}:{address}")
    with _service(docker_client, tmp_path, resolve, (), clean_sqlite_url) as made:
        yield made


@pytest.fixture
def broad_service(
    docker_client: docker.DockerClient, tmp_path: Path, served: tuple[str, int], clean_sqlite_url: str
) -> Iterator[SandboxService]:
    """The kinds reach the test's host: set_egress narrows a sandbox's list below its kind's."""
    address, port = served
    target = f"{OPENED}:{port}"
    with _service(docker_client, tmp_path, (f"{target}:{address}",), (target,), clean_sqlite_url) as made:
        yield made


def _py(service: SandboxService, sid: str, code: str, *args: str, timeout: int = 60) -> str:
    done = service.exec(sid, ["python3", "-c", code, *args], timeout=timeout)
    assert done.exit_code == 0, done.stderr
    return done.stdout


def _wait_file(service: SandboxService, sid: str, path: str) -> None:
    for _ in range(100):  # at most ~10 s for the exec to start and reach its mark
        if service.exec(sid, ["test", "-e", path], timeout=10).exit_code == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared in {sid}")


def _in_background(service: SandboxService, sid: str, code: str, *args: str) -> tuple[threading.Thread, dict]:
    out: dict[str, str] = {}

    def run() -> None:
        out["stdout"] = _py(service, sid, code, *args)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


# Each request through the proxy, one connection each: prints [status, ...] for the targets in argv
# (CONNECT authorities; a 200 is followed by a GET through the tunnel that must answer "hello").
CONNECT_EACH = r"""
import json, socket, sys
def hello(s):  # the answer's head and body may come in separate reads
    data = b""
    while b"hello" not in data and (chunk := s.recv(4096)):
        data += chunk
    return b"hello" in data
out = []
for target in sys.argv[1:]:
    s = socket.create_connection(("egress", 3128), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and (chunk := s.recv(4096)):
        head += chunk
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.") else 0
    if status == 200:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status = 200 if hello(s) else -1
    out.append(status)
print(json.dumps(out))
"""

# Opens a connection to the proxy while the host is allowed, marks it, waits (at most 8 s, inside the
# proxy's 10 s head timeout) for the mark that the host was closed again, then asks for a tunnel on it.
LATE_HEAD = r"""
import os, socket, sys, time
def hello(s):  # the answer's head and body may come in separate reads
    data = b""
    while b"hello" not in data and (chunk := s.recv(4096)):
        data += chunk
    return b"hello" in data
target = sys.argv[1]
s = socket.create_connection(("egress", 3128), timeout=20)
open("/tmp/early-open", "w").close()
for _ in range(160):
    if os.path.exists("/tmp/revoked"):
        break
    time.sleep(0.05)
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head and (chunk := s.recv(4096)):
    head += chunk
line = head.split(b"\r\n")[0].decode()
reached = False
if " 200 " in line:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reached = hello(s)
print(line, "reached" if reached else "not-reached")
"""


def test_a_connection_opened_before_a_revoke_gets_no_tunnel_after_it(
    service: SandboxService, served: tuple[str, int]
) -> None:
    _, port = served
    target = f"{OPENED}:{port}"
    sid = service.create("data-app").id
    service.set_egress(sid, [target], reason="pip install", actor="redteam")
    thread, out = _in_background(service, sid, LATE_HEAD, target)
    _wait_file(service, sid, "/tmp/early-open")
    service.set_egress(sid, None, reason="run generated code", actor="redteam")
    time.sleep(1.0)  # well past the proxy's 250 ms policy watch: the revoke is in force by now
    assert _py(service, sid, CONNECT_EACH, target) == "[403]\n"  # a new connection is refused...
    service.exec(sid, ["touch", "/tmp/revoked"], timeout=10)
    thread.join(timeout=30)
    line = out["stdout"].strip()
    print(f"late head after the revoke: {line}")
    assert " 403 " in line and line.endswith("not-reached"), line  # ...and so must the early one be
    service.destroy(sid)


# A tunnel carrying a request every 50 ms, for at most 15 s, until the proxy ends it: prints the
# requests answered and the wall-clock time the tunnel ended (one kernel: the host's clock).
BUSY_TUNNEL = r"""
import socket, sys, time
def hello(s):  # the answer's head and body may come in separate reads
    data = b""
    while b"hello" not in data and (chunk := s.recv(4096)):
        data += chunk
    return b"hello" in data
target = sys.argv[1]
s = socket.create_connection(("egress", 3128), timeout=5)
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
assert b" 200 " in head.split(b"\r\n")[0], head
open("/tmp/busy-open", "w").close()
answered, end, how = 0, time.monotonic() + 15, "timeout"
while time.monotonic() < end:
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = hello(s)
    except OSError as e:
        how = type(e).__name__
        break
    if not data:
        how = "eof"
        break
    answered += 1
    time.sleep(0.05)
print(answered, how, repr(time.time()))
"""


def test_a_busy_keep_alive_tunnel_is_cut_within_a_second_of_the_revoke(
    service: SandboxService, served: tuple[str, int]
) -> None:
    _, port = served
    target = f"{OPENED}:{port}"
    sid = service.create("data-app").id
    service.set_egress(sid, [target], reason="pip install", actor="redteam")
    thread, out = _in_background(service, sid, BUSY_TUNNEL, target)
    _wait_file(service, sid, "/tmp/busy-open")
    time.sleep(0.5)  # requests are flowing through it
    revoked_at = time.time()
    service.set_egress(sid, None, reason="close", actor="redteam")
    thread.join(timeout=40)
    answered, how, ended = out["stdout"].split()
    print(f"busy tunnel: {answered} requests answered, ended by {how} {float(ended) - revoked_at:.3f}s after")
    assert int(answered) > 0 and how != "timeout", out
    assert float(ended) - revoked_at < 1.0, out
    service.destroy(sid)


def test_spellings_of_a_revoked_host_are_refused_and_of_an_allowed_one_match(
    service: SandboxService, served: tuple[str, int]
) -> None:
    _, port = served
    spellings = [f"{OPENED}:{port}", f"{OPENED.upper()}:{port}", f"{OPENED}.:{port}", f"Opened.Test.:{port}"]
    # Other hosts by suffix, port or encoding; no name here is ever looked up (each is refused first).
    tricks = [f"{OPENED}:{port + 1}", f"{OPENED}:0{port}", f"{OPENED}%2e:{port}", f"x{OPENED}:{port}"]
    sid = service.create("data-app").id
    # Names the proxy could never match, and wide or raw entries, are refused whole; nothing is recorded.
    for refused in (["ópened.test"], ["*.test"], ["*"], [f"127.0.0.1:{port}"], ["opened.test", "localhost"]):
        with pytest.raises(EgressRefused):
            service.set_egress(sid, refused, reason="refused", actor="redteam")
    assert [h for h in service.history(sid) if h.type == "EgressChanged"] == []
    service.set_egress(sid, [f"OPENED.TEST.:{port}"], reason="odd spelling", actor="redteam")
    time.sleep(0.5)
    allowed = json.loads(_py(service, sid, CONNECT_EACH, *spellings, *tricks))
    assert allowed[: len(spellings)] == [200] * len(spellings), allowed
    assert all(s != 200 and s != -1 for s in allowed[len(spellings) :]), allowed
    service.set_egress(sid, [], reason="close all", actor="redteam")
    time.sleep(0.5)
    closed = json.loads(_py(service, sid, CONNECT_EACH, *spellings, *tricks))
    assert all(s in (400, 403) for s in closed), closed
    service.destroy(sid)


# Holds a tunnel (marking it open) and reports, after at most 6 s, whether it still answers.
HOLD_AND_CHECK = r"""
import socket, sys, time
def hello(s):  # the answer's head and body may come in separate reads
    data = b""
    while b"hello" not in data and (chunk := s.recv(4096)):
        data += chunk
    return b"hello" in data
target = sys.argv[1]
s = socket.create_connection(("egress", 3128), timeout=5)
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
assert b" 200 " in head.split(b"\r\n")[0], head
open("/tmp/held", "w").close()
time.sleep(4)
try:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    print("alive" if hello(s) else "cut")
except OSError:
    print("cut")
"""


# A CONNECT to the proxy at the address given (not the name "egress"); prints the status or the error.
CROSS = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 3128), timeout=3)
    s.sendall(f"CONNECT {sys.argv[2]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    print(s.recv(4096).split(b" ")[1].decode())
except OSError as e:
    print(type(e).__name__)
"""


def test_revoking_one_sandbox_leaves_another_on_the_same_egress_point_alone(
    service: SandboxService, served: tuple[str, int], docker_client: docker.DockerClient
) -> None:
    _, port = served
    target = f"{OPENED}:{port}"
    first, second = service.create("data-app").id, service.create("data-app").id
    for sid in (first, second):
        service.set_egress(sid, [target], reason="both", actor="redteam")
    thread, out = _in_background(service, second, HOLD_AND_CHECK, target)
    _wait_file(service, second, "/tmp/held")
    service.set_egress(first, [], reason="close the first", actor="redteam")
    time.sleep(0.6)
    assert _py(service, first, CONNECT_EACH, target) == "[403]\n"
    assert _py(service, second, CONNECT_EACH, target) == "[200]\n"
    thread.join(timeout=30)
    assert out["stdout"].strip() == "alive", out
    # The egress container's address on the second's network, from the first: no way there (each
    # sandbox network is its own), so no claiming the second's policy by the way one comes in.
    [egress] = [
        c
        for c in docker_client.api.containers(
            filters={"label": [f"{LABEL_DEPLOYMENT}={DEPLOYMENT}", "sandbox-lifecycle.role=egress"]}
        )
    ]
    networks = docker_client.api.inspect_container(egress["Id"])["NetworkSettings"]["Networks"]
    [on_second] = [n["IPAddress"] for name, n in networks.items() if second in name]
    done = service.exec(first, ["python3", "-c", CROSS, on_second, target], timeout=30)
    print(f"first sandbox to the egress point on the second's network: {done.stdout.strip()}")
    assert done.stdout.strip() != "200", done.stdout
    # And the other way: opening the first again does not reopen a closed second.
    service.set_egress(second, [], reason="close the second", actor="redteam")
    service.set_egress(first, [target], reason="open the first", actor="redteam")
    time.sleep(0.6)
    assert _py(service, second, CONNECT_EACH, target) == "[403]\n"
    assert _py(service, first, CONNECT_EACH, target) == "[200]\n"
    for sid in (first, second):
        service.destroy(sid)


# Asks for a tunnel (marking the request sent), then reports its status line, whether the upstream
# answered through it, and whether it still answers 2 s later.
SLOW_CONNECT = r"""
import socket, sys, time
def hello(s):
    data = b""
    while b"hello" not in data and (chunk := s.recv(4096)):
        data += chunk
    return b"hello" in data
target = sys.argv[1]
s = socket.create_connection(("egress", 3128), timeout=20)
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
open("/tmp/asked", "w").close()
head = b""
while b"\r\n\r\n" not in head and (chunk := s.recv(4096)):
    head += chunk
line = head.split(b"\r\n")[0].decode()
states = []
for _ in range(2):
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        states.append("reached" if hello(s) else "cut")
    except OSError:
        states.append("cut")
    time.sleep(2)
print(line, *states)
"""


def test_a_revoke_while_the_proxy_is_still_connecting_upstream_cuts_that_tunnel(
    service: SandboxService, slow: SlowUpstream
) -> None:
    target = f"{SLOW}:{slow.port}"
    sid = service.create("data-app").id
    service.set_egress(sid, [target], reason="pip install", actor="redteam")
    thread, out = _in_background(service, sid, SLOW_CONNECT, target)
    _wait_file(service, sid, "/tmp/asked")
    time.sleep(0.3)  # the proxy has decided and is waiting on the upstream's SYN-ACK
    service.set_egress(sid, None, reason="close", actor="redteam")
    time.sleep(0.6)  # the watch has seen the revoke
    slow.release()  # the next SYN retransmit connects
    thread.join(timeout=40)
    line = out["stdout"].strip()
    print(f"tunnel asked before a revoke, connected after it: {line}")
    assert "reached" not in line, line
    service.destroy(sid)


def test_a_resumed_container_never_runs_under_a_broader_list_than_its_log_gives(
    broad_service: SandboxService, served: tuple[str, int]
) -> None:
    _, port = served
    target = f"{OPENED}:{port}"
    service = broad_service
    provider = service.kernel.provider
    sid = service.create("data-app").id
    assert _py(service, sid, CONNECT_EACH, target) == "[200]\n"  # the kind's list allows it
    service.set_egress(sid, [], reason="untrusted code next", actor="redteam")
    time.sleep(0.5)
    assert _py(service, sid, CONNECT_EACH, target) == "[403]\n"
    service.suspend(sid)
    # What code running in the new container reaches before anything after the provider's resume could
    # narrow its policy: the probe runs the moment the resume returns, before the kernel records it (the
    # kernel once applied the log's list only then, through set_egress).
    seen: list[str] = []
    resume = provider.resume

    def resume_then_probe(sandbox_id: str, kind: str, snapshot: object, allow: object = None) -> str:
        ref = resume(sandbox_id, kind, snapshot, allow)  # type: ignore[arg-type]
        done = provider.exec(ref, ["python3", "-c", CONNECT_EACH, target], timeout=30)
        seen.append(done.stdout.strip())
        return ref

    provider.resume = resume_then_probe  # type: ignore[method-assign]
    service.resume(sid)
    print(f"inside the resumed container before the log's policy was applied: {seen}")
    assert _py(service, sid, CONNECT_EACH, target) == "[403]\n"  # after the resume: narrowed again
    assert seen == ["[403]"], seen
    service.destroy(sid)


@pytest.mark.slow
def test_a_sandbox_flooding_the_proxy_does_not_delay_the_cut_of_its_own_revoked_tunnel(
    service: SandboxService, served: tuple[str, int]
) -> None:
    _, port = served
    target = f"{OPENED}:{port}"
    sid = service.create("data-app").id
    service.set_egress(sid, [target], reason="pip install", actor="redteam")
    thread, out = _in_background(service, sid, BUSY_TUNNEL, target)
    _wait_file(service, sid, "/tmp/busy-open")
    # The same sandbox floods the proxy's accept queue (4 processes, 10 s) to keep the watch from running.
    flood, flooded = _in_background(service, sid, ACCEPT_FLOOD, "4", "10")
    time.sleep(2.0)
    revoked_at = time.time()
    service.set_egress(sid, None, reason="close", actor="redteam")
    thread.join(timeout=40)
    flood.join(timeout=60)
    answered, how, ended = out["stdout"].split()
    print(
        f"under a flood of {flooded.get('stdout', '?').strip()} connections: busy tunnel ended by {how} "
        f"{float(ended) - revoked_at:.3f}s after the revoke ({answered} requests answered)"
    )
    assert how != "timeout" and float(ended) - revoked_at < 1.0, out
    service.destroy(sid)
