"""Red team: the git credential the gateway adds (``grant_git``), seen from the sandbox's side.

A git host that echoes a request's headers (an error page, a debugging proxy in front of it) on
loopback; the sandbox asks the gateway's git route with its own token, the gateway adds the granted
Basic credential. The proxy's credentials (inject.py) are redacted from answers; the gateway's git
route relays the answer as it came.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.gateway.state import GatewayState
from tests.support.fake_upstream import REAL_KEY, RunningGateway, running_gateway

GIT_TOKEN = "ghp_PLANTED" + "redteam-gateway-7c1e9b3d5f"
HOST = "git.redcreds.test"


@contextlib.contextmanager
def echo_server() -> Iterator[str]:
    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def state(tmp_path: Path) -> GatewayState:
    state = GatewayState(tmp_path / "egress")
    state.write_upstream("http://127.0.0.1:9", REAL_KEY)
    return state


@pytest.fixture
def gw(state: GatewayState) -> Iterator[RunningGateway]:
    with running_gateway(state.state_dir) as running:
        yield running


def test_a_git_host_echo_does_not_hand_the_granted_token_to_the_sandbox(
    state: GatewayState, gw: RunningGateway
) -> None:
    token = state.issue("sbx1")
    with echo_server() as url:
        state.grant_git("sbx1", HOST, GIT_TOKEN, url=url)
        request = urllib.request.Request(
            f"{gw.url}/git/{HOST}/project.git/info/refs?service=git-upload-pack", headers={"x-api-key": token}
        )
        try:
            answer = urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError as refused:
            answer = refused.read()
    basic = base64.b64encode(f"x-access-token:{GIT_TOKEN}".encode())
    assert b"Authorization: Basic" in answer or b"authorization: Basic" in answer, answer
    assert basic not in answer and GIT_TOKEN.encode() not in answer
