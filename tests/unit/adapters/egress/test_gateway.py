"""The model-API gateway against a loopback Messages API: tokens, the key swap, streaming, bookkeeping."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sandbox_lifecycle.adapters.egress.tokens import issue_token, revoke_token, token_owner
from sandbox_lifecycle.adapters.gateway.state import GatewayState
from tests.support.fake_upstream import (
    EVENTS,
    REAL_KEY,
    WAIT_S,
    FakeUpstream,
    RunningGateway,
    eventually,
    fake_upstream,
    running_gateway,
    sse,
)

MESSAGE = json.dumps({"model": "claude-x", "max_tokens": 16, "stream": True, "messages": []}).encode()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as up:
        yield up


@pytest.fixture
def state(tmp_path: Path, upstream: FakeUpstream) -> GatewayState:
    state = GatewayState(tmp_path / "egress")
    state.write_upstream(upstream.url, REAL_KEY)
    return state


@pytest.fixture
def gw(state: GatewayState) -> Iterator[RunningGateway]:
    with running_gateway(state.state_dir) as running:
        yield running


def connect(gw: RunningGateway) -> http.client.HTTPConnection:
    parts = urlsplit(gw.url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT_S)


def post(
    gw: RunningGateway, headers: dict[str, str], conn: http.client.HTTPConnection | None = None
) -> tuple[int, bytes, dict[str, str]]:
    conn = conn or connect(gw)
    conn.request(
        "POST", "/v1/messages", body=MESSAGE, headers={"content-type": "application/json", **headers}
    )
    resp = conn.getresponse()
    return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}


def test_a_valid_token_reaches_the_upstream_with_the_real_key_instead(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("sbx1")
    status, body, headers = post(gw, {"x-api-key": token, "anthropic-version": "2023-06-01"})
    assert status == 200
    assert body == b"".join(sse(n, d) for n, d in EVENTS)
    [seen] = upstream.seen
    assert seen.path == "/v1/messages" and seen.body == MESSAGE
    assert seen.headers["x-api-key"] == REAL_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    assert token not in json.dumps(seen.headers)
    # Nothing of the key comes back to the sandbox's side.
    assert REAL_KEY not in json.dumps(headers) and REAL_KEY.encode() not in body
    assert headers["request-id"] == "req_fake"


def test_a_bearer_token_is_swapped_in_place(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("sbx1")
    status, _body, _ = post(gw, {"authorization": f"Bearer {token}"})
    assert status == 200
    [seen] = upstream.seen
    assert seen.headers["authorization"] == f"Bearer {REAL_KEY}" and "x-api-key" not in seen.headers


def refusal(status: int, body: bytes) -> str:
    assert status == 401
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
    message: str = error["error"]["message"]
    return message


def test_tokens_that_are_missing_malformed_revoked_or_another_sandboxs_are_refused(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    mine, theirs = state.issue("sbxA"), state.issue("sbxB")
    assert "no gateway token" in refusal(*post(gw, {})[:2])
    assert "(malformed)" in refusal(*post(gw, {"x-api-key": "sk-ant-guess"})[:2])
    # Sandbox A's random part under sandbox B's id: the hash names B's file, which holds B's token.
    forged = mine.replace("sbx-sbxA-", "sbx-sbxB-")
    assert "(revoked)" in refusal(*post(gw, {"x-api-key": forged})[:2])
    assert post(gw, {"x-api-key": theirs})[0] == 200
    state.revoke("sbxA")
    message = refusal(*post(gw, {"x-api-key": mine})[:2])
    assert "(revoked)" in message and "suspended, destroyed or expired" in message
    # Only B's one good call reached the upstream.
    assert len(upstream.seen) == 1


def test_a_resume_issues_a_new_token_and_the_old_one_stops_working(
    gw: RunningGateway, state: GatewayState
) -> None:
    before = state.issue("sbx1")
    assert post(gw, {"x-api-key": before})[0] == 200
    state.revoke("sbx1")  # suspend
    after = state.issue("sbx1")  # resume
    assert after != before
    assert post(gw, {"x-api-key": after})[0] == 200
    assert "(revoked)" in refusal(*post(gw, {"x-api-key": before})[:2])


def test_token_files_hold_only_a_hash_and_ownership_is_checked(tmp_path: Path) -> None:
    token = issue_token(tmp_path, "abc123")
    stored = (tmp_path / "tokens" / "abc123").read_text()
    assert token not in stored and len(stored.strip()) == 64
    assert (tmp_path / "tokens" / "abc123").stat().st_mode & 0o777 == 0o600
    assert token_owner(tmp_path, token) == "abc123"
    assert token_owner(tmp_path, token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    revoke_token(tmp_path, "abc123")
    revoke_token(tmp_path, "abc123")  # idempotent
    assert token_owner(tmp_path, token) is None
    with pytest.raises(ValueError):
        issue_token(tmp_path, "../escape")


def test_server_sent_events_arrive_before_the_stream_ends(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    """The upstream holds its stream open after the first event until the test has read that event
    through the gateway: a buffering gateway would never hand it over (and the read would time out)."""
    upstream.hold = True
    conn = connect(gw)
    conn.request("POST", "/v1/messages", body=MESSAGE, headers={"x-api-key": state.issue("sbx1")})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream"
    first = sse(*EVENTS[0])
    got = b""
    for _ in range(100):  # bounded: each read returns what one chunk carried
        got += resp.read1(len(first) - len(got))
        if len(got) >= len(first):
            break
    assert got == first
    assert not upstream.release.is_set()  # the upstream is still holding the rest back
    upstream.release.set()
    assert resp.read() == b"".join(sse(n, d) for n, d in EVENTS[1:])


def test_hop_by_hop_headers_are_not_forwarded_either_way(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    headers = {
        "x-api-key": state.issue("sbx1"),
        "connection": "keep-alive, x-client-hop",
        "x-client-hop": "1",
        "proxy-authorization": "Basic Zm9vOmJhcg==",
        "te": "trailers",
        "x-kept": "yes",
    }
    status, _body, back = post(gw, headers)
    assert status == 200
    [seen] = upstream.seen
    assert seen.headers["x-kept"] == "yes"
    for name in ("x-client-hop", "proxy-authorization", "te"):
        assert name not in seen.headers
    assert "x-upstream-hop" not in back and "keep-alive" not in back.get("connection", "")


def test_counters_and_activity_are_kept_per_sandbox(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    assert state.model_activity("sbx1") is None
    assert state.counters("sbx1")["requests"] == 0
    token = state.issue("sbx1")
    old = datetime.now(UTC) - timedelta(hours=1)
    state.issue("sbx2")
    conn = connect(gw)  # both calls on one client connection (keep-alive)
    assert post(gw, {"x-api-key": token}, conn)[0] == 200
    upstream.status = 529
    assert post(gw, {"x-api-key": token}, conn)[0] == 529
    assert eventually(lambda: state.counters("sbx1")["requests"] == 2)
    counters = state.counters("sbx1")
    assert counters["bytes_in"] == 2 * len(MESSAGE)
    assert counters["bytes_out"] > len(b"".join(sse(n, d) for n, d in EVENTS))
    assert counters["status"] == {"200": 1, "529": 1}
    touched = state.model_activity("sbx1")
    assert touched is not None and touched > old
    # The other sandbox made no call: nothing counted, no activity.
    assert state.counters("sbx2")["requests"] == 0 and state.model_activity("sbx2") is None
    # The upstream connection was pooled: two calls, one connection.
    assert upstream.connections == 1


def test_an_unreachable_upstream_is_a_502_naming_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    state = GatewayState(tmp_path)
    state.write_upstream(f"http://127.0.0.1:{port}", REAL_KEY)
    token = state.issue("sbx1")
    caplog.set_level(logging.DEBUG)
    with running_gateway(state.state_dir) as gw:
        status, body, _ = post(gw, {"x-api-key": token})
    assert status == 502 and json.loads(body)["error"]["type"] == "api_error"
    assert eventually(lambda: state.counters("sbx1")["status"] == {"502": 1})
    for text in (body.decode(), caplog.text):
        assert REAL_KEY not in text and token not in text


def test_logs_name_the_sandbox_never_the_key_or_token(
    gw: RunningGateway, state: GatewayState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sandbox_lifecycle.egress.gateway")
    token = state.issue("sbx1")
    post(gw, {"x-api-key": token})
    post(gw, {"x-api-key": token + "0"})
    assert eventually(lambda: "sandbox sbx1 POST /v1/messages -> 200" in caplog.text)
    assert REAL_KEY not in caplog.text and token not in caplog.text


def test_upstream_json_is_private(state: GatewayState) -> None:
    assert (state.state_dir / "upstream.json").stat().st_mode & 0o777 == 0o600
    assert state.state_dir.stat().st_mode & 0o777 == 0o700


# --- HTTPS upstream: certificates are verified --------------------------------------------------------


@pytest.fixture
def tls_upstream(tmp_path: Path, upstream: FakeUpstream) -> Iterator[tuple[str, Path]]:
    """The fake upstream behind TLS with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = upstream.server
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield upstream.url.replace("http://", "https://"), cert


def test_an_https_upstream_must_present_a_trusted_certificate(
    tmp_path: Path, tls_upstream: tuple[str, Path], upstream: FakeUpstream
) -> None:
    url, cert = tls_upstream
    state = GatewayState(tmp_path / "tls")
    state.write_upstream(url, REAL_KEY)
    token = state.issue("sbx1")
    with running_gateway(state.state_dir) as gw:
        status, body, _ = post(gw, {"x-api-key": token})
    assert status == 502 and b"SSL" in body  # an untrusted certificate: the key was never sent
    assert upstream.seen == []
    trusting = ssl.create_default_context(cafile=str(cert))
    with running_gateway(state.state_dir, ssl_context=trusting) as gw:
        status, _body, _ = post(gw, {"x-api-key": token})
    assert status == 200 and upstream.seen[0].headers["x-api-key"] == REAL_KEY


def test_healthz_needs_no_token(gw: RunningGateway) -> None:
    conn = connect(gw)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read()) == {"ok": True}


@pytest.mark.parametrize("framing", ["length", "close"])
def test_answers_framed_by_length_or_by_closing_are_relayed_whole(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream, framing: str
) -> None:
    upstream.framing = framing
    conn = connect(gw)
    token = state.issue("sbx1")
    # Twice on one client connection: a close-delimited answer is re-framed, so the client can go on.
    for _ in range(2):
        status, body, _ = post(gw, {"x-api-key": token}, conn)
        assert status == 200 and body == b"".join(sse(n, d) for n, d in EVENTS)


def test_a_stale_pooled_upstream_connection_is_replaced_without_the_client_noticing(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    upstream.drop_after_answer = True
    token = state.issue("sbx1")
    for _ in range(3):
        assert post(gw, {"x-api-key": token})[0] == 200
    assert len(upstream.seen) == 3 and upstream.connections >= 3


def test_a_chunked_request_body_is_forwarded_with_a_length(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    conn = connect(gw)
    conn.putrequest("POST", "/v1/messages")
    conn.putheader("x-api-key", state.issue("sbx1"))
    conn.putheader("transfer-encoding", "chunked")
    conn.endheaders()
    for piece in (MESSAGE[:10], MESSAGE[10:]):
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read()
    [seen] = upstream.seen
    assert seen.body == MESSAGE and seen.headers["content-length"] == str(len(MESSAGE))
    assert "transfer-encoding" not in seen.headers


def test_a_client_leaving_mid_stream_is_counted_and_the_gateway_goes_on(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    upstream.hold = True
    token = state.issue("sbx1")
    parts = urlsplit(gw.url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=WAIT_S) as sock:
        head = (
            f"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: {token}\r\n"
            f"content-length: {len(MESSAGE)}\r\n\r\n"
        )
        sock.sendall(head.encode() + MESSAGE)
        got = b""
        for _ in range(100):
            got += sock.recv(4096)
            if b"message_start" in got:
                break
        assert b"message_start" in got
    upstream.release.set()
    assert eventually(lambda: state.counters("sbx1")["requests"] == 1)
    upstream.hold = False
    assert post(gw, {"x-api-key": token})[0] == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/files"),
        ("GET", "/v1/messages/batches"),
        ("POST", "/v1/organizations/invites"),
        ("GET", "/v1/models/a/b"),
        ("DELETE", "/v1/models/x"),
    ],
)
def test_only_model_calls_are_forwarded_with_the_key(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream, method: str, path: str
) -> None:
    conn = connect(gw)
    conn.request(
        method, path, body=b"{}" if method == "POST" else None, headers={"x-api-key": state.issue("s")}
    )
    resp = conn.getresponse()
    error = json.loads(resp.read())
    assert resp.status == 403 and error["error"]["type"] == "permission_error"
    assert path in error["error"]["message"]
    assert upstream.seen == []


def test_model_listing_and_token_counting_are_model_calls(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("s")
    conn = connect(gw)
    for method, path in (
        ("GET", "/v1/models"),
        ("GET", "/v1/models/claude-x"),
        ("POST", "/v1/messages?beta=true"),
    ):
        conn.request(method, path, body=MESSAGE if method == "POST" else None, headers={"x-api-key": token})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, path
    assert [s.path for s in upstream.seen] == ["/v1/models", "/v1/models/claude-x", "/v1/messages?beta=true"]


def test_an_upstream_silent_for_too_long_is_given_up(state: GatewayState, upstream: FakeUpstream) -> None:
    upstream.hold = True  # the first event, then silence until released
    token = state.issue("sbx1")
    with running_gateway(state.state_dir, read_timeout=0.3) as gw:
        conn = connect(gw)
        conn.request("POST", "/v1/messages", body=MESSAGE, headers={"x-api-key": token})
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            resp.read()
        assert cut.value.partial == sse(*EVENTS[0])
        assert eventually(lambda: state.counters("sbx1")["requests"] == 1)
        assert state.counters("sbx1")["bytes_out"] == len(sse(*EVENTS[0]))
