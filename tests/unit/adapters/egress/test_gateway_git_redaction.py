"""The gateway's git route redacts the credential it adds from the git host's answer (redact.py): the
Basic value and the raw token, in a chunked answer split anywhere, in a close-delimited one; an answer
it could not read (compressed, a byte range) is refused, and the sandbox's codings never go along."""

from __future__ import annotations

import base64
import contextlib
import gzip
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.gateway.state import GatewayState
from tests.support.fake_upstream import REAL_KEY, RunningGateway, running_gateway

GIT_TOKEN = "ghp_PLANTED" + "gwredact-3d9a6e1c2b"
HOST = "git.redact.test"
BASIC = base64.b64encode(f"x-access-token:{GIT_TOKEN}".encode())


@contextlib.contextmanager
def raw_host(seen: list[bytes]) -> Iterator[str]:
    """A git host answering by path: the request head echoed, chunked in 7-byte pieces, gzipped, as a
    206 or until close."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            seen.append(head)
            path = head.split(b" ")[1]
            echo = head + b"token=" + GIT_TOKEN.encode()
            if b"chunked" in path:
                framed = b"".join(
                    b"%x\r\n%s\r\n" % (len(echo[i : i + 7]), echo[i : i + 7]) for i in range(0, len(echo), 7)
                )
                conn.sendall(
                    b"HTTP/1.1 401 No\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    + framed
                    + b"0\r\n\r\n"
                )
            elif b"gzip" in path:
                body = gzip.compress(echo)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
            elif b"range" in path:
                conn.sendall(
                    b"HTTP/1.1 206 Partial\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(echo), echo)
                )
            else:
                conn.sendall(b"HTTP/1.1 401 No\r\nX-Seen: " + BASIC + b"\r\nConnection: close\r\n\r\n" + echo)

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = server.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture
def state(tmp_path: Path) -> GatewayState:
    state = GatewayState(tmp_path / "egress")
    state.write_upstream("http://127.0.0.1:9", REAL_KEY)
    return state


@pytest.fixture
def gw(state: GatewayState) -> Iterator[RunningGateway]:
    with running_gateway(state.state_dir) as running:
        yield running


def _ask(gw: RunningGateway, token: str, repo: str) -> tuple[int, bytes, str]:
    request = urllib.request.Request(
        f"{gw.url}/git/{HOST}/{repo}/info/refs?service=git-upload-pack",
        headers={"x-api-key": token, "Accept-Encoding": "gzip", "Range": "bytes=0-9"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(), str(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read(), str(refused.headers)


@pytest.mark.parametrize("repo", ["chunked.git", "close.git"])
def test_the_credential_is_starred_however_the_answer_is_framed(
    state: GatewayState, gw: RunningGateway, repo: str
) -> None:
    token = state.issue("sbx1")
    seen: list[bytes] = []
    with raw_host(seen) as url:
        state.grant_git("sbx1", HOST, GIT_TOKEN, url=url)
        status, body, headers = _ask(gw, token, repo)
    assert status == 401 and body.startswith(b"GET /") and b"Basic " + b"*" * len(BASIC) in body
    assert BASIC not in body and GIT_TOKEN.encode() not in body and BASIC.decode() not in headers
    assert b"token=" + b"*" * len(GIT_TOKEN) in body
    # The sandbox's coding and range never reached the host.
    assert seen and b"accept-encoding" not in seen[0].lower() and b"range" not in seen[0].lower()


@pytest.mark.parametrize("repo", ["gzip.git", "range.git"])
def test_an_answer_the_redaction_cannot_read_is_refused(
    state: GatewayState, gw: RunningGateway, repo: str
) -> None:
    token = state.issue("sbx1")
    with raw_host([]) as url:
        state.grant_git("sbx1", HOST, GIT_TOKEN, url=url)
        status, body, _ = _ask(gw, token, repo)
    assert status == 502 and b"relayed only in clear" in body and BASIC not in body
