"""Red team: a sandbox tries to obtain the credential the egress point adds to its plain-HTTP requests.

Attacks run from inside a real Docker sandbox, through the service. The origin is a TLS server of this
test (a throw-away CA the egress point trusts) that behaves like an ordinary, honest web server: it
echoes the request's headers (a debugging endpoint, a chatty error page) and honours what a client may
ask of any server: compression (``Accept-Encoding``), byte ranges (``Range``), a streamed (chunked)
answer. The sandbox speaks raw HTTP to its proxy and gets the answer's bytes as relayed; the test
decodes them the way any client in the sandbox could.

Findings are ``xfail(strict=True)`` tests asserting the safe behaviour; attempts that held pass.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import ssl
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.git import GitError
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, HOME
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, RUN_PREFIX, TEST_LIMITS, remove_network_leftovers
from tests.support.tls_ca import ThrowawayCA, make_ca

pytestmark = pytest.mark.docker

HOST = "api.redcreds.test"
OTHER = "other.redcreds.test"
SECRET = "PLANTED-redteam-credential-8e41b07c2d9a4f63"
DEPLOYMENT = f"{RUN_PREFIX}-rcr"
POLICY = Policy(idle_timeout=timedelta(hours=1), retention=timedelta(days=1), lease=timedelta(minutes=5))


@dataclass
class EchoOrigin:
    """What the origin received: (path, raw head) of every request."""

    port: int = 0
    seen: list[tuple[str, bytes]] = field(default_factory=list)

    def heads_holding(self, needle: str) -> list[str]:
        return [path for path, head in self.seen if needle.encode() in head]


def _echo_answer(path: str, head: bytes) -> bytes:
    """An honest server's answer: the request's head, echoed, coded as the client asked."""
    fields = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:])
        if k
    )
    body = head
    extra: list[str] = []
    status = "200 OK"
    if path.startswith("/gzip") and "gzip" in fields.get("accept-encoding", ""):
        body, extra = gzip.compress(body, mtime=0), ["Content-Encoding: gzip"]
    if path.startswith("/range") and (m := re.fullmatch(r"bytes=(\d+)-(\d+)", fields.get("range", ""))):
        first, last = int(m[1]), min(int(m[2]), len(body) - 1)
        status, extra = "206 Partial Content", [f"Content-Range: bytes {first}-{last}/{len(body)}"]
        body = body[first : last + 1]
    if path.startswith("/chunked"):  # a streamed answer, in the origin's own (small) pieces
        pieces = [body[i : i + 16] for i in range(0, len(body), 16)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return (
            f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode() + framed
        )
    if path.startswith("/headers"):  # the credential reflected in answer headers, raw
        value = fields.get("authorization", "")
        extra = [f"Set-Cookie: seen={value}", f"Location: http://{OTHER}/?a={value}", f"X-Echo: {value}"]
        status = "302 Found"
    return (
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
        + "".join(f"{e}\r\n" for e in extra).encode()
        + b"Connection: close\r\n\r\n"
        + body
    )


@contextlib.contextmanager
def echo_origin(address: str, ca: ThrowawayCA) -> Iterator[EchoOrigin]:
    origin = EchoOrigin()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.cert, ca.key)
    server = socket.create_server((address, 0))
    server.settimeout(0.5)
    origin.port = server.getsockname()[1]
    stop = threading.Event()

    def serve_one(raw: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), raw:
            raw.settimeout(10)
            conn = context.wrap_socket(raw, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                got = conn.recv(65536)
                if not got:
                    return
                head += got
            head = head.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            path = head.split(b" ", 2)[1].decode("latin-1")
            origin.seen.append((path, head))
            if path.startswith("/project.git"):  # a slow git host: the push's window lasts a while
                stop.wait(2)
            conn.sendall(_echo_answer(path, head))
            conn.close()

    def loop() -> None:
        while not stop.is_set():
            try:
                raw, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve_one, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_ca(tmp_path_factory.mktemp("ca"), [HOST, OTHER])


@pytest.fixture
def origin(docker_client: docker.DockerClient, ca: ThrowawayCA) -> Iterator[EchoOrigin]:
    with echo_origin(bridge_host_address(docker_client.api.inspect_network("bridge")), ca) as served:
        yield served


@pytest.fixture
def service(
    docker_client: docker.DockerClient,
    tmp_path: Path,
    origin: EchoOrigin,
    ca: ThrowawayCA,
    clean_sqlite_url: str,
) -> Iterator[SandboxService]:
    address = bridge_host_address(docker_client.api.inspect_network("bridge"))
    allow = (f"{HOST}:{origin.port}", f"{OTHER}:{origin.port}")
    egress = EgressSettings(
        allow={"data-app": allow, "ai-writeback": allow},
        resolve=(f"{HOST}:{origin.port}:{address}", f"{OTHER}:{origin.port}:{address}"),
        state_dir=tmp_path / "egress-state",
        upstream_ca=ca.ca,
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


# Inside the sandbox: raw requests to its proxy, each a JSON [target, {header: value}]; prints the raw
# answers, hex, one a line. At most 60 requests, 10 s each.
RAW = textwrap.dedent(
    """
    import json, os, socket, sys, urllib.parse
    proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
    for target, headers in json.loads(sys.argv[1])[:60]:
        host = urllib.parse.urlsplit(target).netloc
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers.items()]
        s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
        s.sendall(("\\r\\n".join(lines) + "\\r\\n\\r\\n").encode())
        got = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            got += piece
        s.close()
        print(got.hex())
    """
)


def _raw(service: SandboxService, sid: str, requests: list[tuple[str, dict[str, str]]]) -> list[bytes]:
    done = service.exec(sid, ["python3", "-c", RAW, json.dumps(requests)], timeout=120)
    assert done.exit_code == 0, done.stderr
    return [bytes.fromhex(line) for line in done.stdout.split()]


def _body(answer: bytes) -> tuple[str, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def _sandbox(service: SandboxService) -> str:
    sid = service.create("data-app").id
    return sid


def _credentialed(service: SandboxService, origin: EchoOrigin) -> str:
    sid = _sandbox(service)
    service.set_credentials(
        sid, f"{HOST}:{origin.port}", {"Authorization": f"Bearer {SECRET}"}, reason="red team", actor="test"
    )
    return sid


def _url(origin: EchoOrigin, path: str, host: str = HOST) -> str:
    return f"http://{host}:{origin.port}{path}"


def test_a_compressed_echo_does_not_hand_the_credential_to_the_sandbox(
    service: SandboxService, origin: EchoOrigin
) -> None:
    sid = _credentialed(service, origin)
    [answer] = _raw(service, sid, [(_url(origin, "/gzip"), {"Accept-Encoding": "gzip"})])
    head, body = _body(answer)
    assert head.startswith("HTTP/1.1 200"), head
    assert origin.heads_holding(SECRET) == ["/gzip"]  # the credential was added
    seen = gzip.decompress(body) if "content-encoding: gzip" in head.lower() else body
    assert SECRET.encode() not in seen


def test_byte_ranges_of_an_echo_do_not_add_up_to_the_credential(
    service: SandboxService, origin: EchoOrigin
) -> None:
    sid = _credentialed(service, origin)
    window = 16
    # Fixed-width numbers: every request's head, so every echo, has the same length and offsets.
    ranges = [f"bytes={i:04d}-{i + window - 1:04d}" for i in range(0, 480, window)]
    requests = [(_url(origin, "/range"), {"Range": r}) for r in ranges]
    answers = [_body(a) for a in _raw(service, sid, requests)]
    # The Range never reaches the origin: each answer is the whole (redacted) echo, never a slice.
    assert not [head for head, _ in answers if " 206 " in head.split("\r\n")[0]], answers[0][0]
    assert not [head for path, head in origin.seen if b"range:" in head.lower()]
    assert origin.heads_holding(SECRET)
    assert SECRET.encode() not in b"".join(body for _, body in answers)


def test_a_streamed_echo_does_not_hand_the_credential_to_the_sandbox(
    service: SandboxService, origin: EchoOrigin
) -> None:
    sid = _credentialed(service, origin)
    [answer] = _raw(service, sid, [(_url(origin, "/chunked"), {})])
    head, framed = _body(answer)
    assert "transfer-encoding: chunked" in head.lower(), head
    body, rest = b"", framed
    for _ in range(10_000):  # bounded: de-chunk as any client would
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    assert origin.heads_holding(SECRET)
    assert SECRET.encode() not in body


def test_the_credential_reflected_raw_in_answer_headers_and_body_is_starred(
    service: SandboxService, origin: EchoOrigin
) -> None:
    """Set-Cookie, Location, any header and the body: raw echoes are redacted, and the proxy does not
    follow the 302 (the other host never gets the credential)."""
    sid = _credentialed(service, origin)
    [answer] = _raw(service, sid, [(_url(origin, "/headers"), {})])
    assert answer.startswith(b"HTTP/1.1 302"), answer[:200]
    assert SECRET.encode() not in answer
    assert b"Set-Cookie: seen=" + b"*" * 10 in answer
    assert [path for path, _ in origin.seen] == ["/headers"]


def test_host_spellings_and_another_host_get_no_other_sandboxs_credential(
    service: SandboxService, origin: EchoOrigin
) -> None:
    """Upper case, a trailing dot and the sandbox's own Host header reach the right origin only; another
    allow-listed host (on the same address) never receives it; a second sandbox never gets the first's."""
    owner = _credentialed(service, origin)
    stranger = _sandbox(service)
    spellings = [
        (_url(origin, "/a", HOST.upper()), {}),
        (_url(origin, "/b", HOST + "."), {}),
        (_url(origin, "/c", OTHER), {"X-Forwarded-Host": HOST}),
    ]
    answers = _raw(service, owner, spellings)
    assert all(SECRET.encode() not in a for a in answers)
    # /c went to the other host: a plain-HTTP request, so the origin (speaking TLS) received nothing.
    assert "/c" not in origin.heads_holding(SECRET)
    before = len(origin.seen)
    _raw(service, stranger, [(_url(origin, "/d"), {}), (_url(origin, "/e", HOST.upper()), {})])
    assert not [p for p, h in origin.seen[before:] if SECRET.encode() in h]


def test_smuggled_and_pipelined_requests_are_refused_before_any_credential_goes_out(
    service: SandboxService, origin: EchoOrigin
) -> None:
    """A second request after the first (to another host) and Content-Length with Transfer-Encoding:
    refused by the proxy; nothing reaches the origin with the credential but the one request."""
    sid = _credentialed(service, origin)
    second = f"GET {_url(origin, '/second', OTHER)} HTTP/1.1\r\nHost: {OTHER}\r\n\r\n"
    script = textwrap.dedent(
        f"""
        import os, socket, urllib.parse
        proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
        for raw in [
            "GET {_url(origin, "/first")} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" + {second!r},
            "POST {_url(origin, "/smug")} HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 4\\r\\n"
            "Transfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n",
        ]:
            s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
            s.sendall(raw.encode())
            got = b""
            while piece := s.recv(65536):
                got += piece
            print(got.split(b"\\r\\n")[0].decode())
        """
    )
    done = service.exec(sid, ["python3", "-c", script], timeout=60)
    assert done.exit_code == 0, done.stderr
    assert [line.split(" ")[1] for line in done.stdout.split("\n") if line] == ["400", "400"], done.stdout
    assert origin.seen == []


# Inside the sandbox, in the background: what any process of the agent's may do while a push runs — ask
# the git host for another repository, over and over (every 0.2 s, for 15 s at most, or until /tmp/stop).
POLL = textwrap.dedent(
    """
    import os, time, urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": os.environ["HTTP_PROXY"]}))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not os.path.exists("/tmp/stop"):
        try:
            opener.open(os.environ["TARGET"], timeout=5).read()
        except Exception:
            pass
        time.sleep(0.2)
    """
)


def test_a_pushs_token_serves_only_the_push(service: SandboxService, origin: EchoOrigin) -> None:
    remote = f"https://{HOST}:{origin.port}/project.git"
    with service.turn("conv-redcreds", AI_WRITEBACK) as sbx:
        repo = f"{HOME}/project"
        setup = (
            f"git init -q -b main {repo} && cd {repo} && git -c user.name=a -c user.email=a@example.invalid "
            f"commit -q --allow-empty -m one && git remote add origin {remote}"
        )
        assert sbx.exec(["sh", "-c", setup], timeout=60).exit_code == 0
        target = _url(origin, "/someone-else/private.git/info/refs?service=git-receive-pack")
        # An exec's processes are reaped when it ends (by a marker in their environment and their parent):
        # a clean environment and a parent that has already left make one the reaper does not see.
        sbx.write_file(f"{HOME}/poll.py", POLL)
        background = (
            f"env -i PATH=/usr/local/bin:/usr/bin:/bin HTTP_PROXY=$HTTP_PROXY TARGET='{target}' "
            f"setsid sh -c 'python3 {HOME}/poll.py >/dev/null 2>&1 &'; sleep 1"
        )
        assert sbx.exec(["sh", "-c", background], timeout=30).exit_code == 0
        try:
            with contextlib.suppress(GitError):  # the echo origin is no git server: the push fails
                sbx.git.at(repo).push(token="ghp_PLANTED" + "0c4f9a2e7b1d3c5e")
        finally:
            sbx.exec(["touch", "/tmp/stop"], timeout=30)
    credentialed = {path.split("?")[0] for path, head in origin.seen if b"Authorization: Basic" in head}
    assert credentialed and all(path.startswith("/project.git/") for path in credentialed), credentialed
