"""set_egress on real Docker, seen from inside a real sandbox, through the service.

The host opened here is a server of this test on the engine's default bridge address, reached by a name
pinned with SANDBOX_EGRESS_RESOLVE (as in test_egress.py); the kind's allow-list does not name it. The
service opens it, a request from the sandbox gets through within a second, a tunnel open to it is cut
within a second of the reset, and after a suspend and a resume the sandbox has the policy its log says.
"""

from __future__ import annotations

import contextlib
import http.server
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
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, RUN_PREFIX, TEST_LIMITS, remove_network_leftovers

pytestmark = pytest.mark.docker

OPENED = "opened.test"
DEPLOYMENT = f"{RUN_PREFIX}-egl"
POLICY = Policy(idle_timeout=timedelta(hours=1), retention=timedelta(days=1), lease=timedelta(minutes=5))


class _Hello(http.server.BaseHTTPRequestHandler):
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
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield address, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def service(
    docker_client: docker.DockerClient, tmp_path: Path, served: tuple[str, int], clean_sqlite_url: str
) -> Iterator[SandboxService]:
    address, port = served
    egress = EgressSettings(
        allow={"data-app": (), "ai-writeback": ()},  # the kinds reach nothing
        resolve=(f"{OPENED}:{port}:{address}",),
        state_dir=tmp_path / "egress-state",
    )
    provider = DockerProvider(
        DOCKER_IMAGES,
        LocalSnapshotStore(tmp_path / "snapshots"),
        client=docker_client,
        environ={},
        limits=TEST_LIMITS,
        deployment=DEPLOYMENT,
        disk_limit_mb=0,
        egress=egress,
    )
    store = open_store(clean_sqlite_url)
    try:
        yield SandboxService(store, provider, policy=POLICY)
    finally:
        store.close()
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_DEPLOYMENT}={DEPLOYMENT}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        remove_network_leftovers(docker_client, f"{LABEL_DEPLOYMENT}={DEPLOYMENT}")


# Tries the URL through the proxy every 50 ms, at most 40 times (2 s); prints the first status and the
# seconds it took to get a 200 (or "never").
POLL = """
import time, urllib.request, urllib.error
url = URL
started = time.monotonic()
first = None
for _ in range(40):
    try:
        status = urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        status = e.code
    first = first or status
    if status == 200:
        print(first, round(time.monotonic() - started, 3))
        break
    time.sleep(0.05)
else:
    print(first, "never")
"""

# Opens a tunnel to the host, marks it open with a file, then waits (at most 20 s) for the proxy to end it,
# and prints the wall-clock time it ended (the host's clock: one kernel).
HOLD = """
import socket, time
host, port = HOST, PORT
s = socket.create_connection(("egress", 3128), timeout=20)
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n".encode())
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(4096)
print(head.split(b"\\r\\n")[0].decode())
open("/tmp/tunnel-open", "w").close()
try:
    ended = s.recv(4096)
    print("cut" if ended == b"" else "data", repr(time.time()))
except socket.timeout:
    print("still open", repr(time.time()))
"""


def _status(service: SandboxService, sid: str, url: str) -> tuple[int, str]:
    done = service.exec(sid, ["python3", "-c", POLL.replace("URL", repr(url))], timeout=60)
    assert done.exit_code == 0, done.stderr
    first, took = done.stdout.split()
    return int(first), took


def test_a_host_opened_is_reachable_within_a_second_and_closed_again_by_a_reset(
    service: SandboxService, served: tuple[str, int]
) -> None:
    _, port = served
    url = f"http://{OPENED}:{port}/"
    sid = service.create("data-app").id
    assert _status(service, sid, url)[0] == 403  # refused: the kind's list is empty

    service.set_egress(sid, [f"{OPENED}:{port}"], reason="pip install", actor="test")
    first, took = _status(service, sid, url)
    assert took != "never" and float(took) < 1.0, (first, took)
    print(f"opened: first status {first}, 200 after {took} s of polling")

    # A tunnel open to the host while it is closed again is cut.
    holder: dict[str, str] = {}

    def hold() -> None:
        code = HOLD.replace("HOST, PORT", f"{OPENED!r}, {port}")
        holder["out"] = service.exec(sid, ["python3", "-c", code], timeout=60).stdout

    thread = threading.Thread(target=hold)
    thread.start()
    for _ in range(100):  # at most 10 s for the exec to start and the tunnel to open
        if service.exec(sid, ["test", "-e", "/tmp/tunnel-open"], timeout=10).exit_code == 0:
            break
        time.sleep(0.1)
    reset_at = time.time()
    service.set_egress(sid, None, reason="run generated code", actor="test")
    thread.join(timeout=30)
    lines = holder["out"].strip().splitlines()
    verdict, when = lines[-1].rsplit(" ", 1)
    assert lines[0].startswith("HTTP/1.1 200") and verdict == "cut", holder["out"]
    assert float(when) - reset_at < 1.0, holder["out"]
    print(f"reset: open tunnel cut {float(when) - reset_at:.3f} s after the reset")
    assert _status(service, sid, url)[0] == 403

    changes = [
        (h.data["allow"], h.reason, h.actor) for h in service.history(sid) if h.type == "EgressChanged"
    ]
    assert changes == [([f"{OPENED}:{port}"], "pip install", "test"), (None, "run generated code", "test")]
    service.destroy(sid)


def test_after_a_suspend_and_a_resume_the_policy_is_the_logs(
    service: SandboxService, served: tuple[str, int]
) -> None:
    _, port = served
    url = f"http://{OPENED}:{port}/"
    sid = service.create("data-app").id
    service.set_egress(sid, [f"{OPENED}:{port}"], reason="pip install")
    service.suspend(sid)
    assert service.resume(sid).state == lc.IDLE
    # In force before the resume was recorded: the very first request gets through.
    assert _status(service, sid, url)[0] == 200
    # Reset while suspended: recorded now, in force from the resume.
    service.suspend(sid)
    assert service.set_egress(sid, None, reason="close").state == lc.SUSPENDED
    service.resume(sid)
    assert _status(service, sid, url)[0] == 403
    service.destroy(sid)
