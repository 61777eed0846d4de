"""Property tests of what the egress container parses: whatever it accepts, a strict reader reads the same.

* Request heads: anything ``gateway_http.parse_request_head`` accepts, h11 (the strict parser under httpx and
  uvicorn) accepts too, with the same method, target, version and headers. The other way round need not
  hold: we refuse more (control characters h11 lets through, a second Content-Length of equal value).
* Paths: a path the gateway forwards is a fixed point of every lenient reading an upstream might apply
  (percent-decoding, dot-segment removal, ``;`` parameters, backslashes, empty segments), so what the
  upstream serves is what the gateway checked.
* The policy matcher: a host passes the allow-list (the resolver is asked) exactly when a reference
  matcher written here from docs/network.md says so.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

import h11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.egress.gateway_http import MAX_HEAD_BYTES, BadRequest, parse_request_head
from sandbox_lifecycle.adapters.egress.policy import Policy, load_policy, policy_document
from sandbox_lifecycle.adapters.egress.routes import git_route, model_call

SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Pieces a head is made of, each a list of good ones and a list of nasty ones (bare CR and LF, NUL, DEL,
# obs-text, tabs, folding). A drawn head is either clean throughout or mixes nasty pieces in, so that both
# answers come up often.
def _mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(good * 3 + bad)


_PIECES: dict[str, tuple[list[str], list[str]]] = {
    "name": (
        ["x-api-key", "anthropic-version", "content-type", "x-a"],
        ["content-length", "transfer-encoding", "a b", "x:y", "", "host", "x\x00"],
    ),
    "char": ([*list("ab1-/="), " ", "\t", "é"], ["\r", "\n", "\x00", "\x7f", "\x01", "\r\n", ":", ";"]),
    "target": (
        ["/v1", "/models", "/x", "?a=1", "/claude-3", "%2e", "~"],
        ["/..", "/.", "%2f", "%", ";", "?", "#", " ", "\x00", "\\", "//", "%zz"],
    ),
    "method": (["GET", "POST"], ["get", "PO ST", "", "G\x00T", "CONNECT", "M@"]),
    "version": (["HTTP/1.1", "HTTP/1.0"], ["HTTP/2", "http/1.1", "HTTP/1.1 ", "HTTP/1.10"]),
    "eol": (["\r\n"], ["\n", "\r", "\r\r\n"]),
    "separator": ([":", ": "], [" :", ":  ", "\t:"]),
    "value": (["5", "0", "chunked", "abc", ""], ["chunked, gzip", "05", "-1", "1 2", "5, 5"]),
}


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    clean = draw(st.booleans())

    def pick(kind: str) -> str:
        good, bad = _PIECES[kind]
        return draw(st.sampled_from(good if clean else good * 3 + bad))

    def value() -> str:
        return (
            pick("value")
            if draw(st.booleans())
            else "".join(pick("char") for _ in range(draw(st.integers(0, 6))))
        )

    target = "/" + "".join(pick("target") for _ in range(draw(st.integers(0, 5)))).lstrip("/")
    lines = [f"{pick('method')} {target} {pick('version')}"]
    if clean or draw(st.integers(0, 9)):
        lines.append("host: egress:8081")
    for _ in range(draw(st.integers(0, 4))):
        lines.append(f"{pick('name')}{pick('separator')}{value()}")
    if not clean and not draw(st.integers(0, 4)):
        lines.insert(draw(st.integers(1, len(lines))), f" {value()}")  # obsolete line folding
    text = "".join(line + pick("eol") for line in lines) + "\r\n"
    return text.encode("latin-1")


def _h11(raw: bytes) -> h11.Request | None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES * 2)
    try:
        conn.receive_data(raw)
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


@SETTINGS
@given(st.one_of(heads(), st.binary(max_size=200).map(lambda b: b + b"\r\n\r\n")))
@example(b"POST /v1/messages HTTP/1.1\r\nhost: h\r\nanthropic-version: 1\rx-api-key: k\r\n\r\n")
@example(b"GET /v1/models HTTP/1.1\r\nhost: h\r\n x-api-key: k\r\n\r\n")
def test_what_the_gateway_accepts_h11_reads_the_same(raw: bytes) -> None:
    try:
        ours = parse_request_head(raw)
    except BadRequest:
        return
    theirs = _h11(raw)
    assert theirs is not None, raw
    assert theirs.method.decode() == ours.method
    assert theirs.target.decode() == ours.target
    assert "HTTP/" + theirs.http_version.decode() == ours.version
    assert [(k.decode(), v.decode("latin-1")) for k, v in theirs.headers.raw_items()] == ours.headers


def _lenient_readings(path: str) -> set[str]:
    """What upstreams and the proxies in front of them have been known to make of a path."""
    decoded = unquote(path)
    return {
        decoded,
        posixpath.normpath(path),
        posixpath.normpath(decoded),
        re.sub(r";[^/]*", "", path),
        path.replace("\\", "/"),
        re.sub(r"/+", "/", path),
    }


_SEGMENT = _mostly(
    ["v1", "models", "messages", "count_tokens", "claude-x", "a.b", "o", "r.git"],
    ["", "..", ".", "...", "%2e", "%2e%2e", "%2F", "..;", "x;y", "a\\b", "%zz"],
)
_PATH = st.lists(_SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
_MODEL_PATH = _PATH | _PATH.map(lambda path: "/v1/models" + path) | _PATH.map(lambda path: "/v1" + path)


@SETTINGS
@given(
    st.sampled_from(["GET", "POST"]), _PATH, st.sampled_from(["", "?beta=true", "?x=../..", "?a=%2f", "?%zz"])
)
@example("GET", "/v1/models/..", "")
@example("GET", "/v1/models/%2e%2e%2fv1%2ffiles", "")
@example("GET", "/v1/models/..;", "")
def test_a_forwarded_model_path_is_what_every_lenient_reader_sees(method: str, path: str, query: str) -> None:
    forwarded = model_call(method, path + query)
    if forwarded is None:
        return
    assert forwarded == path + query
    assert _lenient_readings(path) == {path}, path


@SETTINGS
@given(
    st.sampled_from(["GET", "POST"]),
    st.sampled_from(["h.test", "h.test:8443", "H.Test.", "1.2.3.4", "h_t", "-h"]),
    _PATH,
)
def test_a_forwarded_git_path_is_what_every_lenient_reader_sees(method: str, host: str, path: str) -> None:
    for tail in ("/info/refs?service=git-upload-pack", "/git-upload-pack", "/git-receive-pack"):
        route = git_route(method, f"/git/{host}{path}{tail}")
        if route is None:
            continue
        target_path = route.target.split("?", 1)[0]
        assert _lenient_readings(target_path) == {target_path}
        assert route.host == route.host.lower() and not route.host.endswith(".")


# --- the policy matcher ---------------------------------------------------------------------------------

_RULES = ["allowed.test", "*.wild.test", "pinned.test:8443"]
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _normal(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _reference(host: str, port: int) -> bool:
    """docs/network.md's allow-list, read literally: a name (lower-cased, trailing dots dropped: the root
    is implied) of LDH labels; ``name`` on 80 and 443, ``*.domain`` for names under it, ``name:port`` on
    that port."""
    name = _normal(host)
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return False
    if all(label.isdigit() for label in name.split(".")) or re.fullmatch(r"0x[0-9a-f]+(\.[0-9a-fx]+)*", name):
        return False  # numeric forms are addresses, not names
    web = port in (80, 443)
    return (
        (name == "allowed.test" and web)
        or (name.endswith(".wild.test") and web)
        or (name == "pinned.test" and port == 8443)
    )


def _policy() -> Policy:
    document = policy_document("p", "data-app", "10.213.0.0/28", _RULES, [], "SANDBOX_EGRESS_ALLOW_DATA_APP")
    return load_policy(document)


_HOST_CHARS = st.sampled_from(
    [
        *list("aw."),
        "allowed",
        "wild",
        "test",
        "pinned",
        "*",
        "-",
        "_",
        "A",
        "\x00",
        " ",
        "/",
        "@",
        ":",
        "[",
        "]",
        "1",
        "0x",
        "é",
        "%2e",
        "..",
    ]
)


# Random text, and names built around the rules with a label before and a tail after, some of them nasty.
_HOSTS = st.lists(_HOST_CHARS, max_size=10).map("".join) | st.builds(
    "".join,
    st.tuples(
        st.sampled_from(
            ["", "a.", "x-y.", "A.", "b.c.", "a b.", "\x00.", "-a.", "a..", "*.", "1.", "_.", "é."]
        ),
        st.sampled_from(["allowed.test", "wild.test", "pinned.test", "ALLOWED.test", "allowed.tes"]),
        st.sampled_from(["", "", ".", "..", " ", ":443", "\x00"]),
    ),
)


@SETTINGS
@given(_HOSTS, st.sampled_from([80, 443, 8443, 22]))
@example("evil.test\x00.wild.test", 443)
@example("a b.wild.test", 443)
@example("x/y.wild.test", 443)
@example("ALLOWED.TEST.", 443)
def test_the_allow_list_lets_through_exactly_what_the_reference_does(host: str, port: int) -> None:
    asked: list[str] = []

    def resolver(name: str, _port: int) -> list[str]:
        asked.append(name)
        raise OSError("no lookups in this test")

    decision = _policy().decide(host, port, resolver)
    assert decision.address is None
    assert bool(asked) == _reference(host, port), (host, port, decision.reason)
    # What is looked up is the name that matched, never the text as sent.
    assert asked in ([], [_normal(host)])


def test_the_strategies_reach_both_answers() -> None:
    # Guard against a property that holds only because nothing is ever accepted.
    assert parse_request_head(b"GET /v1/models HTTP/1.1\r\nhost: h\r\n\r\n").target == "/v1/models"
    assert model_call("GET", "/v1/models/claude-x") == "/v1/models/claude-x"
    assert _reference("a.wild.test", 443) and not _reference("wild.test", 443)
