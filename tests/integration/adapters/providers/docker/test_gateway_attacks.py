"""Attacks on the egress container's gateway (port 8081) from inside real sandboxes, on runc (docker) and
on runsc (gvisor).

A sandbox holds its own gateway token (``ANTHROPIC_API_KEY``) and can send the gateway anything. These
tests make it try: the git route pointed at the host's bridge address, an open and a closed port of it,
the egress container's own loopback and the metadata address; another sandbox's token; bodies of 60 MB
with no token and with one. Servers here listen on the host's bridge address; no allow-list names a
public host.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures.egress_attacks import attack_provider_on, egress_container, py

pytestmark = pytest.mark.docker

WAIT_S = 10.0


class Listener:
    """A service of the host on its bridge address that no policy lists: counts who connects."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_server((address, 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        self.sock.close()


@pytest.fixture(scope="module")
def listener(bridge_address: str) -> Iterator[Listener]:
    found = Listener(bridge_address)
    yield found
    found.close()


@pytest.fixture(scope="module")
def attack_provider(
    engine: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
    model: FakeUpstream,
) -> Iterator[DockerProvider]:
    """The gateway forwards to the model stand-in; the proxy allows nothing."""
    with attack_provider_on(engine, docker_client, tmp_path_factory, model, role="gw") as made:
        yield made


# Sends raw requests to the gateway from the sandbox; prints one JSON line [status, message] per target.
ASK = r"""
import json, os, socket, sys
token = sys.argv[1] or os.environ["ANTHROPIC_API_KEY"]
for target in sys.argv[2:]:
    s = socket.create_connection(("egress", 8081), timeout=20)
    head = f"GET {target} HTTP/1.1\r\nhost: egress:8081\r\nx-api-key: {token}\r\nconnection: close\r\n"
    s.sendall(head.encode() + b"\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
    try:
        message = json.loads(body)["error"]["message"]
    except Exception:
        message = body[:200].decode(errors="replace")
    print(json.dumps([status, message]))
"""


def ask(provider: DockerProvider, ref: str, token: str, *targets: str) -> list[tuple[int, str]]:
    out = py(provider, ref, ASK, token, *targets)
    return [tuple(json.loads(line)) for line in out.strip().splitlines()]  # type: ignore[misc]


def git(authority: str) -> str:
    return f"/git/{authority}/o/r.git/info/refs?service=git-upload-pack"


def test_the_git_route_reaches_nothing_the_policy_refuses(
    attack_provider: DockerProvider, sandboxes: Callable[[], str], listener: Listener, bridge_address: str
) -> None:
    ref = sandboxes()
    with socket.create_server((bridge_address, 0)) as probe:
        closed = int(probe.getsockname()[1])
    authorities = [
        f"{bridge_address}:{listener.port}",
        f"{bridge_address}:{closed}",
        "127.0.0.1:3128",
        "127.0.0.1:8081",
        "2130706433:3128",
        "169.254.169.254:80",
        f"unlisted.test:{listener.port}",
        "egress:3128",
    ]
    answers = dict(zip(authorities, ask(attack_provider, ref, "", *map(git, authorities)), strict=True))
    assert {a: status for a, (status, _m) in answers.items()} == dict.fromkeys(authorities, 403), answers
    assert listener.accepted == 0
    # No port scanner: an open and a closed port of the same address answer alike.
    open_message = answers[f"{bridge_address}:{listener.port}"][1].replace(str(listener.port), "PORT")
    assert open_message == answers[f"{bridge_address}:{closed}"][1].replace(str(closed), "PORT")


def test_a_token_works_only_in_its_own_sandbox(
    attack_provider: DockerProvider, sandboxes: Callable[[], str], model: FakeUpstream
) -> None:
    a, b = sandboxes(), sandboxes()
    token_b = py(attack_provider, b, "import os; print(os.environ['ANTHROPIC_API_KEY'])").strip()
    before = len(model.seen)
    [(status, message)] = ask(attack_provider, a, token_b, "/v1/models")
    assert status == 401 and "network" in message
    assert len(model.seen) == before
    assert ask(attack_provider, a, "", "/v1/models")[0][0] == 200
    assert ask(attack_provider, b, token_b, "/v1/models")[0][0] == 200


# Six connections at once, each a POST declaring 60 MB, the body sent in 1 MiB pieces; with "token" the
# sandbox's own token goes with them. Prints [status line, bytes sent] per connection.
FLOOD = r"""
import json, os, socket, sys, threading
token = os.environ["ANTHROPIC_API_KEY"] if sys.argv[1] == "token" else None
N, SIZE, PIECE = 6, 60 * 1024 * 1024, b"0" * (1 << 20)
results = [None] * N
def one(i):
    sent, first = 0, ""
    try:
        s = socket.create_connection(("egress", 8081), timeout=60)
        auth = f"x-api-key: {token}\r\n" if token else ""
        head = f"POST /v1/messages HTTP/1.1\r\nhost: egress:8081\r\ncontent-length: {SIZE}\r\n{auth}"
        s.sendall(head.encode() + b"\r\n")
        try:
            for _ in range(SIZE // len(PIECE)):
                s.sendall(PIECE)
                sent += len(PIECE)
        except OSError:
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            first = "ERR " + type(e).__name__
        first = first or data.split(b"\r\n")[0].decode(errors="replace")
    except OSError as e:
        first = "ERR " + type(e).__name__
    results[i] = [first, sent]
threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
for t in threads: t.start()
for t in threads: t.join(300)
print(json.dumps(results))
"""


# Ten model listings one after another, each timed: prints [[status, seconds], ...].
TIMED = r"""
import json, os, socket, time
token = os.environ["ANTHROPIC_API_KEY"]
out = []
for _ in range(10):
    started = time.monotonic()
    s = socket.create_connection(("egress", 8081), timeout=20)
    head = f"GET /v1/models HTTP/1.1\r\nhost: e\r\nx-api-key: {token}\r\nconnection: close\r\n"
    s.sendall(head.encode() + b"\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    out.append([int(data.split(b" ")[1]), round(time.monotonic() - started, 4)])
    time.sleep(0.2)
print(json.dumps(out))
"""


def _peak_memory(client: docker.DockerClient, container_id: str) -> int | None:
    """The egress container's peak memory since it started (cgroup v1's max_usage; v2 has none)."""
    stats = client.api.stats(container_id, stream=False)
    peak = (stats.get("memory_stats") or {}).get("max_usage")
    return int(peak) if peak else None


@pytest.mark.parametrize("who", ["no-token", "token"])
def test_60_mb_bodies_do_not_kill_the_egress_point(
    attack_provider: DockerProvider,
    docker_client: docker.DockerClient,
    sandboxes: Callable[[], str],
    model: FakeUpstream,
    who: str,
) -> None:
    attacker, bystander = sandboxes(), sandboxes()
    before = egress_container(docker_client, bystander)
    seen = len(model.seen)
    with ThreadPoolExecutor(2) as pool:
        flood = pool.submit(py, attack_provider, attacker, FLOOD, who, timeout=600)
        time.sleep(1.0)  # the flood is under way
        # Meanwhile another sandbox's calls, timed inside it: each answers within a second.
        latencies = json.loads(py(attack_provider, bystander, TIMED))
        results = json.loads(flood.result(600))
    after = egress_container(docker_client, bystander)
    peak = _peak_memory(docker_client, after["Id"])
    print(f"{who}: results {results}; egress peak memory {peak} bytes; bystander latencies {latencies}")
    assert not after["State"]["OOMKilled"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["RestartCount"] == before["RestartCount"]
    if who == "no-token":
        # Refused on the head: nothing reached the model, and no body was held.
        assert all(first.startswith("HTTP/1.1 401") or first.startswith("ERR") for first, _ in results)
        assert any(first.startswith("HTTP/1.1 401") for first, _ in results)
        assert [s for s in model.seen[seen:] if s.method == "POST"] == []
    else:
        assert [first for first, _ in results] == ["HTTP/1.1 200 OK"] * 6
        posts = [s for s in model.seen[seen:] if s.method == "POST"]
        assert [len(s.body) for s in posts] == [60 * 1024 * 1024] * 6
    if peak is not None:
        assert peak < 96 * 1024**2
    assert [status for status, _seconds in latencies] == [200] * len(latencies)
    assert max(seconds for _status, seconds in latencies) < 1.0
    # Another sandbox is served at once afterwards.
    started = time.monotonic()
    assert ask(attack_provider, bystander, "", "/v1/models")[0][0] == 200
    assert time.monotonic() - started < 5.0


# Raw requests from the sandbox, each a Python bytes literal with TOKEN for the sandbox's token; prints
# the status of each.
RAW = r"""
import ast, json, os, socket, sys
token = os.environ["ANTHROPIC_API_KEY"].encode()
out = []
for text in sys.argv[1:]:
    s = socket.create_connection(("egress", 8081), timeout=20)
    s.sendall(ast.literal_eval(text).replace(b"TOKEN", token))
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    out.append(int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0)
print(json.dumps(out))
"""

PATH_TRICKS = [
    "/v1/models/..",
    "/v1/models/%2e%2e%2f%2e%2e%2fv1%2ffiles",
    "/v1/models/..;/files",
    "/v1/models/a/../../files",
    "/v1//models",
]


def test_smuggled_headers_and_path_tricks_never_reach_the_model_with_the_key(
    attack_provider: DockerProvider, sandboxes: Callable[[], str], model: FakeUpstream
) -> None:
    ref = sandboxes()
    close = b"host: egress:8081\r\nx-api-key: TOKEN\r\nconnection: close\r\n"
    smuggled = (
        b"POST /v1/messages HTTP/1.1\r\n" + close + b"anthropic-version: 1\rx-api-key: sk-ant-attacker\r\n"
        b"content-length: 2\r\n\r\n{}"
    )
    bare_lf = (
        b"POST /v1/messages HTTP/1.1\r\n"
        + close
        + b"x-a: 1\nx-api-key: sk-ant-attacker\r\ncontent-length: 2\r\n\r\n{}"
    )
    tricks = [f"GET {path} HTTP/1.1\r\n".encode() + close + b"\r\n" for path in PATH_TRICKS]
    seen = len(model.seen)
    statuses = json.loads(py(attack_provider, ref, RAW, *(repr(r) for r in [smuggled, bare_lf, *tricks])))
    assert statuses[:2] == [400, 400]
    assert all(status in (400, 403) for status in statuses[2:]), dict(
        zip(PATH_TRICKS, statuses[2:], strict=True)
    )
    assert len(model.seen) == seen and model.duplicated == []
