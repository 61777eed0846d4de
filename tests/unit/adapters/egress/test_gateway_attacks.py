"""Attacks on the gateway over loopback: header smuggling, path tricks, unauthenticated bodies, tokens used
from another sandbox's network, and the git route asked to reach what no policy allows.

The loopback stands in for a sandbox network here: a policy whose subnet is 127.0.0.0/8 makes the test
client "that sandbox". tests/**/test_gateway_attacks.py makes the same attacks from real sandboxes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sandbox_lifecycle.adapters.egress.bodies import RETRY_BODY_BYTES, SANDBOX_BUFFER_BYTES
from sandbox_lifecycle.adapters.egress.gateway import MAX_CONNECTIONS_PER_SOURCE
from sandbox_lifecycle.adapters.egress.gateway_http import BadRequest, parse_request_head
from sandbox_lifecycle.adapters.egress.policy import policy_document, write_policy
from sandbox_lifecycle.adapters.egress.routes import MAX_GIT_SEGMENTS, git_route
from sandbox_lifecycle.adapters.egress.tokens import check_token, issue_token
from sandbox_lifecycle.adapters.gateway.state import GatewayState
from tests.support.fake_upstream import (
    REAL_KEY,
    WAIT_S,
    FakeUpstream,
    RunningGateway,
    fake_upstream,
    running_gateway,
)

MESSAGE = b'{"model": "claude-x", "max_tokens": 16, "messages": []}'


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


def exchange(gw: RunningGateway, raw: bytes, *, wait: float = WAIT_S) -> bytes:
    """Send raw bytes, read until the gateway closes or ``wait`` passes; what came back."""
    parts = urlsplit(gw.url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=wait) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            answer += data
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "host: egress:8081", *(f"{k}: {v}" for k, v in headers)]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --- header smuggling and path tricks (LOW) ------------------------------------------------------------


def test_a_bare_cr_inside_a_header_value_is_refused_not_forwarded(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("sbx1")
    smuggled = [("x-api-key", token), ("anthropic-version", "2023-06-01\rx-api-key: sk-ant-attacker")]
    assert status_of(exchange(gw, request("POST", "/v1/messages", smuggled, MESSAGE))) == 400
    for bad in (b"x-a: 1\nx-api-key: evil", b"x-a: 1\x00", b" folded: 1", b"x-a : 1", b"x-a: 1\x7f"):
        raw = request("POST", "/v1/messages", [("x-api-key", token)], MESSAGE)
        raw = raw.replace(b"host: egress:8081", b"host: egress:8081\r\n" + bad)
        assert status_of(exchange(gw, raw)) == 400, bad
    assert upstream.seen == []


@pytest.mark.parametrize(
    "target",
    [
        "/v1/models/..",
        "/v1/models/.",
        "/v1/models/...",
        "/v1/models/%2e%2e",
        "/v1/models/%2e%2e%2f%2e%2e%2fv1%2ffiles",
        "/v1/models/..;",
        "/v1/models/..;/files",
        "/v1/models/x;y",
        "/v1/models/",
        "/v1//models",
        "/v1/models/a/../../files",
        "/v1/models?x=../../files#frag",
        "/v1/./models",
    ],
)
def test_path_tricks_never_reach_the_upstream_with_the_key(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream, target: str
) -> None:
    answer = exchange(gw, request("GET", target, [("x-api-key", state.issue("sbx1"))]))
    assert status_of(answer) in (400, 403), answer[:200]
    assert upstream.seen == []


def test_a_model_id_in_normal_form_is_still_a_model_call(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    answer = exchange(
        gw,
        request("GET", "/v1/models/claude-3-5-sonnet-20241022?beta=true", [("x-api-key", state.issue("s"))]),
    )
    assert status_of(answer) == 200
    assert [s.path for s in upstream.seen] == ["/v1/models/claude-3-5-sonnet-20241022?beta=true"]


# --- tokens (mutation-test gaps) -------------------------------------------------------------------------


def test_replace_revokes_the_earlier_token_and_the_newest_of_many_added_ones_is_valid(tmp_path: Path) -> None:
    first = issue_token(tmp_path, "s1")
    second = issue_token(tmp_path, "s1", replace=True)
    assert check_token(tmp_path, first) == (None, "revoked")
    assert check_token(tmp_path, second) == ("s1", "")
    added = [issue_token(tmp_path, "s1", replace=False) for _ in range(12)]
    assert check_token(tmp_path, added[-1]) == ("s1", "")
    # At most eight live at once: the oldest go first.
    assert [check_token(tmp_path, t)[0] for t in added[-8:]] == ["s1"] * 8
    assert check_token(tmp_path, added[0]) == (None, "revoked")
    assert check_token(tmp_path, second) == (None, "revoked")


@pytest.mark.parametrize("bad", ["a/../../escape", "../x", ".", "..", "a/b", "", "x" * 129, "a\x00b"])
def test_a_sandbox_id_that_is_not_a_file_name_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        issue_token(tmp_path / "state", bad)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "state" / "tokens").exists()


def test_lower_case_bearer_works_and_the_upstream_gets_exactly_one_credential(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("sbx1")
    answer = exchange(
        gw,
        request(
            "POST", "/v1/messages", [("authorization", f"bearer {token}"), ("connection", "close")], MESSAGE
        ),
    )
    assert status_of(answer) == 200
    [seen] = upstream.seen
    assert seen.all("authorization") == [f"Bearer {REAL_KEY}"] and seen.all("x-api-key") == []
    # Both credential headers at once: the key goes once, in the x-api-key the token came in.
    both = [("x-api-key", token), ("authorization", f"Bearer {token}"), ("connection", "close")]
    assert status_of(exchange(gw, request("POST", "/v1/messages", both, MESSAGE))) == 200
    assert upstream.seen[1].all("x-api-key") == [REAL_KEY] and upstream.seen[1].all("authorization") == []


# --- bodies: authenticate on the head (MEDIUM) --------------------------------------------------------------


def test_an_unauthenticated_body_is_refused_on_the_head_before_a_byte_of_it_is_read(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    parts = urlsplit(gw.url)
    head = b"POST /v1/messages HTTP/1.1\r\nhost: egress:8081\r\ncontent-length: 62914560\r\n\r\n"
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=WAIT_S) as sock:
        sock.sendall(head + b"x" * 1024)
        sock.settimeout(2.0)
        started = time.monotonic()
        answer = sock.recv(65536)
        assert status_of(answer) == 401 and time.monotonic() - started < 2.0
        assert b"connection: close" in answer.lower()
    assert upstream.seen == []


def test_a_large_body_streams_through_whole_by_length_and_chunked(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("sbx1")
    big = b'{"pad": "' + b"a" * (8 * 1024 * 1024) + b'"}'
    answer = exchange(
        gw, request("POST", "/v1/messages", [("x-api-key", token), ("connection", "close")], big)
    )
    assert status_of(answer) == 200
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (big[: 3 << 20], big[3 << 20 :])) + b"0\r\n\r\n"
    raw = request(
        "POST",
        "/v1/messages",
        [("x-api-key", token), ("transfer-encoding", "chunked"), ("connection", "close")],
    )
    raw = raw.replace(b"content-length: 0\r\n", b"") + chunked
    assert status_of(exchange(gw, raw)) == 200
    assert [s.body == big for s in upstream.seen] == [True, True]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_what_one_sandbox_holds_whole_is_bounded_and_the_rest_streams(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream, framing: str
) -> None:
    token = state.issue("s")
    gate = upstream.answer_gate = threading.Event()
    body = b'{"pad": "' + b"b" * (900 * 1024) + b'"}'
    headers = [("x-api-key", token), ("connection", "close")]
    if framing == "length":
        raw = request("POST", "/v1/messages", headers, body)
    else:
        raw = request("POST", "/v1/messages", [*headers, ("transfer-encoding", "chunked")])
        raw = raw.replace(b"content-length: 0\r\n", b"") + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with ThreadPoolExecutor(10) as pool:
        answers = [pool.submit(exchange, gw, raw) for _ in range(10)]
        # Every body has arrived upstream, no answer has left it: what is held now is at its most.
        deadline = time.monotonic() + WAIT_S
        while len(upstream.seen) < 10 and time.monotonic() < deadline:
            held = gw.gateway.buffered("s")
            assert held <= SANDBOX_BUFFER_BYTES
            time.sleep(0.005)
        assert len(upstream.seen) == 10
        assert 0 < gw.gateway.buffered("s") <= SANDBOX_BUFFER_BYTES
        gate.set()
        assert [status_of(a.result(WAIT_S)) for a in answers] == [200] * 10
    assert all(s.body == body for s in upstream.seen)
    assert gw.gateway.buffered("s") == 0
    if framing == "chunked":
        # A held body goes with its length, a streamed one chunked: at most four (1 MiB each of the
        # 4 MiB share) were held, and the rest streamed from their first byte.
        held_whole = [s for s in upstream.seen if "content-length" in s.headers]
        assert 1 <= len(held_whole) <= SANDBOX_BUFFER_BYTES // RETRY_BODY_BYTES
        assert all(
            s.headers.get("transfer-encoding") == "chunked" for s in upstream.seen if s not in held_whole
        )


def test_a_malformed_chunked_body_is_a_400(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("s")
    head = request("POST", "/v1/messages", [("x-api-key", token), ("transfer-encoding", "chunked")])
    head = head.replace(b"content-length: 0\r\n", b"")
    for bad in (b"5\r\nhelloXX0\r\n\r\n", b"zz\r\n", b"5 \r\nhello\r\n0\r\n\r\n", b"5\nhello\r\n0\r\n\r\n"):
        assert status_of(exchange(gw, head + bad)) == 400, bad
    assert upstream.seen == []


def test_one_sandbox_holds_a_bounded_number_of_connections(gw: RunningGateway, state: GatewayState) -> None:
    _policy(state, "here", "127.0.0.0/8", [], [])  # the loopback is this sandbox's network
    parts = urlsplit(gw.url)
    address = (parts.hostname or "", parts.port or 0)
    held = [socket.create_connection(address, timeout=WAIT_S) for _ in range(MAX_CONNECTIONS_PER_SOURCE)]
    try:
        time.sleep(0.2)  # the gateway has accepted them all
        with socket.create_connection(address, timeout=WAIT_S) as extra:
            # Refused at once, before it sends anything.
            assert status_of(extra.recv(65536)) == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + WAIT_S
    while status_of(exchange(gw, b"GET /healthz HTTP/1.1\r\nhost: g\r\n\r\n")) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


# --- a token is valid only from its own sandbox's network (HIGH) ------------------------------------------


def _policy(state: GatewayState, sandbox_id: str, subnet: str, allow: list[str], resolve: list[str]) -> None:
    write_policy(
        str(state.state_dir),
        policy_document(
            sandbox_id, "ai-writeback", subnet, allow, resolve, "SANDBOX_EGRESS_ALLOW_AI_WRITEBACK"
        ),
    )


def test_a_token_works_only_from_its_own_sandboxs_network(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    here, elsewhere, e2b = state.issue("here"), state.issue("elsewhere"), state.issue("e2b")
    _policy(state, "here", "127.0.0.0/8", [], [])
    _policy(state, "elsewhere", "10.213.7.0/28", [], [])
    call = [("connection", "close")]
    assert status_of(exchange(gw, request("GET", "/v1/models", [("x-api-key", here), *call]))) == 200
    for other in (elsewhere, e2b):  # another sandbox's, or one of no sandbox network at all
        answer = exchange(gw, request("GET", "/v1/models", [("x-api-key", other), *call]))
        assert status_of(answer) == 401 and b"authentication_error" in answer
    assert len(upstream.seen) == 1


# --- the git route goes through the policy (HIGH) ---------------------------------------------------------


class _Listener:
    """A TCP listener on loopback that counts connections and answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
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


@pytest.fixture
def listener() -> Iterator[_Listener]:
    found = _Listener()
    yield found
    found.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _git_body(answer: bytes) -> str:
    return str(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"])


@pytest.mark.parametrize("with_policy", [True, False])
def test_the_git_route_reaches_no_address_the_policy_refuses(
    gw: RunningGateway, state: GatewayState, listener: _Listener, with_policy: bool
) -> None:
    token = state.issue("sbx1")
    if with_policy:
        _policy(state, "sbx1", "127.0.0.0/8", ["git.test:1"], ["git.test:1:127.0.0.1"])
    closed = _closed_port()
    answers = {}
    for authority in (
        f"127.0.0.1:{listener.port}",
        f"127.0.0.1:{closed}",
        "127.0.0.1:3128",
        "2130706433",
        "0x7f.1",
        f"localhost:{listener.port}",
        f"unlisted.test:{listener.port}",
        "169.254.169.254:80",
    ):
        target = f"/git/{authority}/o/r.git/info/refs?service=git-upload-pack"
        answer = exchange(gw, request("GET", target, [("x-api-key", token), ("connection", "close")]))
        assert status_of(answer) == 403, (authority, answer[:300])
        answers[authority] = _git_body(answer)
    assert listener.accepted == 0
    # An open port and a closed one answer alike: the route is no port scanner.
    assert answers[f"127.0.0.1:{listener.port}"].replace(str(listener.port), "P") == answers[
        f"127.0.0.1:{closed}"
    ].replace(str(closed), "P")


def test_a_pin_alone_does_not_open_the_git_route(
    gw: RunningGateway, state: GatewayState, listener: _Listener
) -> None:
    token = state.issue("sbx1")
    # Pinned to the listener, but no rule lists it: refused before any connection.
    _policy(state, "sbx1", "127.0.0.0/8", ["other.test"], [f"pinned.test:{listener.port}:127.0.0.1"])
    target = f"/git/pinned.test:{listener.port}/o/r.git/info/refs?service=git-upload-pack"
    answer = exchange(gw, request("GET", target, [("x-api-key", token), ("connection", "close")]))
    assert status_of(answer) == 403 and "not in the allow-list" in _git_body(answer)
    assert listener.accepted == 0


def test_of_two_policies_claiming_one_subnet_the_newer_decides_whose_tokens_work_there(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    # A subnet freed by a removed sandbox and reused before the stale file went: the live one is newer.
    old, new = state.issue("old"), state.issue("new")
    _policy(state, "old", "127.0.0.0/8", [], [])
    _policy(state, "new", "127.0.0.0/8", [], [])
    stale = state.state_dir / "policies" / "old.json"
    before = stale.stat().st_mtime - 60
    os.utime(stale, (before, before))
    call = [("connection", "close")]
    assert status_of(exchange(gw, request("GET", "/v1/models", [("x-api-key", new), *call]))) == 200
    assert status_of(exchange(gw, request("GET", "/v1/models", [("x-api-key", old), *call]))) == 401


def test_an_unreadable_policy_makes_its_sandboxs_token_valid_nowhere(
    gw: RunningGateway, state: GatewayState, upstream: FakeUpstream
) -> None:
    token = state.issue("broken")
    (state.state_dir / "policies").mkdir(mode=0o755)
    (state.state_dir / "policies" / "broken.json").write_text("{not json")
    # Unreadable is not absent: the token of a sandbox that has a policy never turns valid everywhere.
    answer = exchange(gw, request("GET", "/v1/models", [("x-api-key", token), ("connection", "close")]))
    assert status_of(answer) == 401
    assert upstream.seen == []


def test_a_git_path_has_at_most_32_segments() -> None:
    longest = "/".join(["d"] * (MAX_GIT_SEGMENTS - 1))
    assert git_route("POST", f"/git/h.test/{longest}/git-upload-pack") is not None
    assert git_route("POST", f"/git/h.test/d/{longest}/git-upload-pack") is None
    assert git_route("POST", "/git/h.test:0/r/git-upload-pack") is None
    assert git_route("POST", "/git/h.test:65536/r/git-upload-pack") is None
    assert git_route("POST", "/git/h.test:65535/r/git-upload-pack") is not None


def test_an_e2b_sandbox_s_git_reaches_only_granted_hosts_at_public_addresses(tmp_path: Path) -> None:
    """The decision alone (no connection is made): a sandbox without a policy, as behind the E2B gateway."""
    from sandbox_lifecycle.adapters.egress.outbound import Outbound, Refusal, Target

    answers = {"public.test": ["10.0.0.7", "203.0.114.9"], "private.test": ["10.0.0.7", "127.0.0.1"]}

    def resolver(host: str, _port: int) -> list[str]:
        if host not in answers:
            raise OSError("unknown")
        return answers[host]

    outbound = Outbound(tmp_path, resolver)
    granted = {"token": "t"}
    assert outbound.git_target("s", "public.test", 443, {}) == Refusal(
        403,
        "egress refused public.test:443: the gateway relays git only to hosts the backend granted this "
        "sandbox a credential for",
    )
    assert outbound.git_target("s", "public.test", 8443, granted) == Target(
        "https", "public.test", 8443, "203.0.114.9"
    )
    refused = outbound.git_target("s", "private.test", 443, granted)
    assert isinstance(refused, Refusal) and refused.status == 403 and "no public address" in refused.reason
    unknown = outbound.git_target("s", "unknown.test", 443, granted)
    assert isinstance(unknown, Refusal) and unknown.status == 502
    # A grant's URL is the backend's: where it says, on the port its scheme implies.
    assert outbound.git_target("s", "h.test", 443, {"url": "http://git.internal.test/base/"}) == Target(
        "http", "git.internal.test", 80, "git.internal.test", "/base"
    )
    for bad in ("ftp://h.test", "https://", "https://h.test:99999"):
        unusable = outbound.git_target("s", "h.test", 443, {"url": bad})
        assert isinstance(unusable, Refusal) and unusable.status == 503, bad


_OK_HEAD = b"POST /v1/messages HTTP/1.1\r\nhost: h\r\n"


@pytest.mark.parametrize(
    ("head", "status", "words"),
    [
        (_OK_HEAD + b"x: 1\r\n" * 101 + b"\r\n", 431, "header lines"),
        (_OK_HEAD + b"host: h2\r\n\r\n", 400, "exactly one Host"),
        (b"POST /v1/messages HTTP/1.1\r\n\r\n", 400, "exactly one Host"),
        (_OK_HEAD + b"transfer-encoding: gzip, chunked\r\n\r\n", 501, "chunked"),
        (_OK_HEAD + b"transfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n", 400, "both"),
        (b"POST /v1/messages HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
        (_OK_HEAD + b"content-length: 5\r\ncontent-length: 5\r\n\r\n", 400, "Content-Length"),
        (_OK_HEAD + b"content-length: +5\r\n\r\n", 400, "Content-Length"),
        (_OK_HEAD + b"x-a: 1\r\n", 400, "empty line"),
        (b"POST /v1/messages HTTP/1.1\rhost: h\r\n\r\n", 400, "bare CR"),
        (b"POST  /v1/messages HTTP/1.1\r\nhost: h\r\n\r\n", 400, "request line"),
        (b"POST http://h/v1/messages HTTP/1.1\r\nhost: h\r\n\r\n", 400, "request line"),
        (_OK_HEAD + b"x0-9: 1\r\n\r\n", 0, ""),
        (b"GET /v1/models HTTP/1.0\r\n\r\n", 0, ""),
    ],
)
def test_head_faults_are_refused_with_their_status(head: bytes, status: int, words: str) -> None:
    if not status:
        parse_request_head(head)  # accepted
        return
    with pytest.raises(BadRequest) as refused:
        parse_request_head(head)
    assert refused.value.status == status and words in refused.value.message


def test_the_header_count_bound_is_exact() -> None:
    from sandbox_lifecycle.adapters.egress.gateway_http import MAX_HEADERS

    parse_request_head(
        b"GET /v1/models HTTP/1.1\r\n" + b"host: h\r\n" + b"x: 1\r\n" * (MAX_HEADERS - 1) + b"\r\n"
    )
    with pytest.raises(BadRequest) as refused:
        parse_request_head(
            b"GET /v1/models HTTP/1.1\r\n" + b"host: h\r\n" + b"x: 1\r\n" * MAX_HEADERS + b"\r\n"
        )
    assert refused.value.status == 431


def test_a_head_too_large_cut_short_or_absent(gw: RunningGateway, upstream: FakeUpstream) -> None:
    from sandbox_lifecycle.adapters.egress.gateway_http import MAX_HEAD_BYTES

    huge = b"GET /v1/models HTTP/1.1\r\nhost: h\r\nx-pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    assert status_of(exchange(gw, huge)) == 431
    cut = exchange(gw, b"GET /v1/models HTTP/1.1\r\nhost")
    assert status_of(cut) == 400 and b"ended early" in cut
    assert exchange(gw, b"") == b""  # a connection that closes at once gets no answer
    assert exchange(gw, b"\r\n") == b""
    assert upstream.seen == []
