"""The exec path on the stdlib engine client (adapters/providers/docker/engine.py), against the real engine.

Each behaviour is checked on both transports (``either_provider``: the engine client, and the SDK when a
client is handed in), so the two give the same results; the rest is the client's own HTTP and framing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker import engine as docker_engine
from sandbox_lifecycle.adapters.providers.docker.engine import (
    API_VERSION,
    DEFAULT_SOCKET,
    DockerEngine,
    EngineAPIError,
    EngineTimeout,
    EngineUnreachable,
    engine_from_environ,
)
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.errors import ExecTimeout, ProviderError, ProviderLost
from sandbox_lifecycle.core.kinds import DATA_APP
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import DEPLOYMENT, TEST_LIMITS

# The engine this run uses (scripts/test starts one of its own, on its own socket), not the default one.
_HOST = os.environ.get("DOCKER_HOST", "")
ENGINE_SOCKET = _HOST.removeprefix("unix://") if _HOST.startswith("unix:///") else DEFAULT_SOCKET

pytestmark = pytest.mark.docker

NewId = Callable[[], str]

# Writes N chunks of varying sizes (1 byte to ~70 KB, so frames straddle the client's reads) alternately
# to stdout and stderr, flushing each, so the engine sends them as interleaved frames.
_INTERLEAVED = r"""
import sys
out, err = sys.stdout.buffer, sys.stderr.buffer
for i in range(int(sys.argv[1])):
    size = (i * 7919) % 70000 + 1
    data = bytes((i * 31 + j) % 256 for j in range(size))
    (out if i % 2 == 0 else err).write(data)
    (out if i % 2 == 0 else err).flush()
"""


def interleaved_expected(n: int) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    for i in range(n):
        size = (i * 7919) % 70000 + 1
        (out if i % 2 == 0 else err).extend(bytes((i * 31 + j) % 256 for j in range(size)))
    return bytes(out), bytes(err)


# ------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("environ", "address"),
    [
        ({}, f"unix://{DEFAULT_SOCKET}"),
        ({"DOCKER_HOST": ""}, f"unix://{DEFAULT_SOCKET}"),
        ({"DOCKER_HOST": "unix://"}, f"unix://{DEFAULT_SOCKET}"),
        ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, "unix:///run/user/1000/docker.sock"),
        ({"DOCKER_HOST": "tcp://10.0.0.5:2375"}, "tcp://10.0.0.5:2375"),
        ({"DOCKER_HOST": "http://127.0.0.1:2375/"}, "tcp://127.0.0.1:2375"),
        ({"DOCKER_HOST": "tcp://[::1]:2375"}, "tcp://[::1]:2375"),
        ({"DOCKER_HOST": "tcp://:2375"}, "tcp://127.0.0.1:2375"),
        ({"DOCKER_TLS_VERIFY": ""}, f"unix://{DEFAULT_SOCKET}"),  # empty is off, as for the SDK
        # What this client does not speak is left to the SDK (None), which handles or refuses it.
        ({"DOCKER_HOST": "tcp://10.0.0.5:2376", "DOCKER_TLS_VERIFY": "1"}, None),
        ({"DOCKER_TLS_VERIFY": "0"}, None),  # any value but empty turns TLS on in the SDK
        ({"DOCKER_CERT_PATH": "/certs"}, None),
        ({"DOCKER_HOST": "ssh://me@host"}, None),
        ({"DOCKER_HOST": "https://host:2376"}, None),
        ({"DOCKER_HOST": "tcp://host"}, None),  # no port: the SDK's own error
        ({"DOCKER_HOST": "tcp://host:2375/prefix"}, None),
        ({"DOCKER_HOST": "unix://relative.sock"}, None),
        ({"DOCKER_HOST": "npipe:////./pipe/docker_engine"}, None),
    ],
)
def test_the_engine_is_the_one_the_sdk_would_reach(environ: dict[str, str], address: str | None) -> None:
    engine = engine_from_environ(environ)
    assert (engine.address if engine is not None else None) == address


def test_a_missing_engine_socket_is_unreachable_with_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    provider = DockerProvider(DOCKER_IMAGES, LocalSnapshotStore(tmp_path / "s"), environ={})
    with pytest.raises(ProviderError, match="the Docker engine is unreachable") as raised:
        provider.exec("0123456789ab", ["true"], timeout=10)
    assert not isinstance(raised.value, ProviderLost)  # nothing is known to be gone
    assert "no-engine.sock" in str(raised.value) and "scripts/start-docker.sh" in str(raised.value)


# ------------------------------------------------------------------------------ exec, both transports


def test_interleaved_big_stdout_and_stderr_arrive_exact(
    either_provider: DockerProvider, new_id: NewId
) -> None:
    ref = either_provider.create(new_id(), DATA_APP)
    chunks: list[tuple[str, bytes]] = []
    result = either_provider.exec(
        ref,
        ["python3", "-c", _INTERLEAVED, "120"],
        timeout=120,
        on_stdout=lambda b: chunks.append(("out", b)),
        on_stderr=lambda b: chunks.append(("err", b)),
        max_output_bytes=8 * 1024**2,
    )
    out, err = interleaved_expected(120)
    assert result.exit_code == 0 and not result.truncated
    assert len(out) > 1024**2 and len(err) > 1024**2  # 2 MB each
    assert result.stdout_bytes == out and result.stderr_bytes == err
    # The callbacks saw the same bytes, in order per stream, and both streams more than once.
    assert b"".join(c for s, c in chunks if s == "out") == out
    assert b"".join(c for s, c in chunks if s == "err") == err
    switches = sum(1 for a, b in itertools.pairwise(chunks) if a[0] != b[0])
    assert switches > 10


def test_binary_output_is_exact(either_provider: DockerProvider, new_id: NewId) -> None:
    ref = either_provider.create(new_id(), DATA_APP)
    # Every byte value, and bytes that look like a frame header (stream 1, a huge size) inside the data.
    payload = bytes(range(256)) * 64 + b"\x01\x00\x00\x00\xff\xff\xff\xff" + b"\x02\x00\x00\x00\x00"
    script = (
        "import sys; d = bytes.fromhex(sys.argv[1]); "
        "sys.stdout.buffer.write(d); sys.stderr.buffer.write(d[::-1])"
    )
    result = either_provider.exec(ref, ["python3", "-c", script, payload.hex()], timeout=60)
    assert result.exit_code == 0
    assert result.stdout_bytes == payload and result.stderr_bytes == payload[::-1]


def test_exit_codes_env_and_cwd(either_provider: DockerProvider, new_id: NewId) -> None:
    ref = either_provider.create(new_id(), DATA_APP)
    codes = [
        either_provider.exec(ref, ["bash", "-c", f"exit {c}"], timeout=30).exit_code for c in (0, 1, 42, 255)
    ]
    assert codes == [0, 1, 42, 255]
    assert either_provider.exec(ref, ["bash", "-c", "kill -KILL $$"], timeout=30).exit_code == 137
    assert either_provider.exec(ref, ["no-such-command"], timeout=30).exit_code == 127
    done = either_provider.exec(
        ref,
        ["bash", "-c", 'printf "%s|%s|%s" "$A" "$B" "$PWD"'],
        timeout=30,
        env={"A": "1 2", "B": "é=x"},
        cwd="/tmp",
    )
    assert done.stdout == "1 2|é=x|/tmp"
    assert (
        either_provider.exec(ref, ["pwd"], timeout=30).stdout == "/home/sandbox/app\n"
    )  # the kind's workdir


def test_chunks_reach_the_callback_as_they_are_printed(
    either_provider: DockerProvider, new_id: NewId
) -> None:
    ref = either_provider.create(new_id(), DATA_APP)
    # The command waits for a file that only the callback, on seeing its first line, creates: if output
    # were handed on only at the end, it would give up waiting and say so.
    script = (
        "echo ready; for i in $(seq 200); do [[ -e /tmp/go ]] && { echo done; exit 0; }; sleep 0.1; done; "
        "echo gave-up"
    )
    seen: list[bytes] = []

    def on_stdout(chunk: bytes) -> None:
        seen.append(chunk)
        if b"ready" in chunk:
            either_provider.exec(ref, ["touch", "/tmp/go"], timeout=30)

    result = either_provider.exec(ref, ["bash", "-c", script], timeout=60, on_stdout=on_stdout)
    assert result.stdout == "ready\ndone\n"
    assert b"".join(seen) == b"ready\ndone\n"


def test_output_is_bounded_while_the_callbacks_get_all_of_it(
    either_provider: DockerProvider, new_id: NewId
) -> None:
    ref = either_provider.create(new_id(), DATA_APP)
    total = 0

    def count(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)

    result = either_provider.exec(
        ref,
        ["bash", "-c", "head -c 3000000 /dev/zero; echo end >&2"],
        timeout=60,
        on_stdout=count,
        max_output_bytes=1000,
    )
    assert result.exit_code == 0 and result.truncated
    assert result.stdout_bytes == b"\0" * 1000 and result.stderr == "end\n"
    assert total == 3_000_000
    # The provider's own bound when none is asked for.
    default = either_provider.exec(ref, ["head", "-c", "200000", "/dev/zero"], timeout=60)
    assert len(default.stdout_bytes) == TEST_LIMITS.max_output_bytes and default.truncated


def test_a_timeout_kills_the_process_tree(either_provider: DockerProvider, new_id: NewId) -> None:
    ref = either_provider.create(new_id(), DATA_APP)
    with pytest.raises(ExecTimeout) as raised:
        either_provider.exec(ref, ["bash", "-c", "echo started; setsid sleep 311 & sleep 310"], timeout=1)
    assert raised.value.stdout == "started\n"  # what it printed before the kill
    deadline = time.monotonic() + 10  # killed processes are reaped by the container's init
    while (left := either_provider.exec(ref, ["pgrep", "-af", "^sleep 31[01]$"], timeout=10)).exit_code == 0:
        assert time.monotonic() < deadline, f"still running after the timeout: {left.stdout}"
        time.sleep(0.1)
    assert left.exit_code == 1


def test_a_removed_container_is_lost(
    either_provider: DockerProvider,
    docker_client: docker.DockerClient,
    store: LocalSnapshotStore,
    new_id: NewId,
) -> None:
    ref = either_provider.create(new_id(), DATA_APP)
    docker_client.api.remove_container(ref, force=True, v=True)
    # Known to the provider (no inspect first: the exec create finds it gone) and unknown (the inspect does).
    with pytest.raises(ProviderLost, match="no longer exists"):
        either_provider.exec(ref, ["true"], timeout=10)
    fresh = DockerProvider(DOCKER_IMAGES, store, environ={}, limits=TEST_LIMITS, deployment=DEPLOYMENT)
    with pytest.raises(ProviderLost, match="no longer exists"):
        fresh.exec(ref, ["true"], timeout=10)


# ------------------------------------------------------------------------------ the client itself


def test_the_client_reads_what_the_sdk_reads(
    docker_client: docker.DockerClient, new_id: NewId, provider: DockerProvider
) -> None:
    ref = provider.create(new_id(), DATA_APP)
    engine = DockerEngine(unix_path=ENGINE_SOCKET)
    # Container inspect comes chunked (the engine streams its JSON): the same document as the SDK's.
    assert engine.inspect_container(ref) == docker_client.api.inspect_container(ref)
    exec_id = engine.exec_create(ref, ["bash", "-c", "exit 3"], user="1000:1000")
    engine.exec_run(exec_id)
    assert engine.exec_inspect(exec_id)["ExitCode"] == 3
    assert engine.exec_inspect(exec_id) == docker_client.api.exec_inspect(exec_id)
    with pytest.raises(EngineAPIError) as raised:
        engine.inspect_container("sbx-no-such-container")
    assert (
        raised.value.status_code == 404
        and raised.value.explanation == "No such container: sbx-no-such-container"
    )
    with pytest.raises(EngineAPIError) as raised:
        engine.exec_inspect("0" * 64)
    assert raised.value.status_code == 404


def test_the_client_speaks_plain_tcp(
    provider: DockerProvider, new_id: NewId, monkeypatch: pytest.MonkeyPatch, store: LocalSnapshotStore
) -> None:
    ref = provider.create(new_id(), DATA_APP)
    with _loopback_to_socket(ENGINE_SOCKET) as port:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
        over_tcp = DockerProvider(DOCKER_IMAGES, store, environ={}, limits=TEST_LIMITS, deployment=DEPLOYMENT)
        assert over_tcp._engine is not None and over_tcp._engine.address == f"tcp://127.0.0.1:{port}"
        done = over_tcp.exec(ref, ["bash", "-c", "echo hi; echo there >&2; exit 5"], timeout=30)
    assert (done.exit_code, done.stdout, done.stderr) == (5, "hi\n", "there\n")


def test_the_exec_path_loads_no_sdk(provider: DockerProvider, new_id: NewId, tmp_path: Path) -> None:
    ref = provider.create(new_id(), DATA_APP)
    probe = f"""
import json, sys
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
store = LocalSnapshotStore({str(tmp_path)!r})
p = DockerProvider({DOCKER_IMAGES!r}, store, environ={{}}, deployment={DEPLOYMENT!r})
r = p.exec({ref!r}, ["echo", "ok"], timeout=30)
loaded = sorted(m for m in ("docker", "requests", "urllib3") if m in sys.modules)
print(json.dumps({{"out": r.stdout, "loaded": loaded}}))
"""
    # The run's engine, and none of the variables that would send the provider down the SDK's path.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_") or k == "DOCKER_HOST"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"out": "ok\n", "loaded": []}
    assert API_VERSION == "1.41"  # Docker 20.10, the oldest engine the provider supports


@contextmanager
def _loopback_to_socket(path: str) -> Iterator[int]:
    """A loopback TCP port relaying each connection to a unix socket: the engine seen over tcp://."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopped = threading.Event()
    opened: list[socket.socket] = []

    def serve() -> None:
        while not stopped.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(path)
            opened.extend((conn, upstream))
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopped.set()
        thread.join(5)
        listener.close()
        for sock in opened:
            sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (None, EngineTimeout, "did not answer within 0.5s"),  # takes the request, never answers
        (b"", EngineUnreachable, "closed the connection without an answer"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", EngineUnreachable, "does not answer like a Docker engine"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n<html", EngineUnreachable, "like a Docker engine"),
        (
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nboom\r\n0\r\n\r\n",
            EngineAPIError,
            "500: boom",  # not JSON: the body is the explanation, read through its chunks
        ),
    ],
)
def test_what_is_not_an_engine_answer_is_an_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: bytes | None,
    error: type[Exception],
    message: str,
) -> None:
    monkeypatch.setattr(docker_engine, "REQUEST_TIMEOUT_S", 0.5)
    path = str(tmp_path / "not-an-engine.sock")
    with _answering(path, answer), pytest.raises(error, match=re.escape(message)):
        DockerEngine(unix_path=path).inspect_container("sbx-x")


@contextmanager
def _answering(path: str, answer: bytes | None) -> Iterator[None]:
    """A unix socket that reads one request and sends ``answer`` then closes (None: stays silent)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(10)
    done = threading.Event()

    def serve() -> None:
        with suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                if answer is None:
                    done.wait(10)
                else:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)
        server.close()
