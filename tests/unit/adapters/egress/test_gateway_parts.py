"""The gateway's small parts through their public functions: tokens, upstream, bookkeeping, routes, shares.

Each test here pins a behaviour a one-line mutant of these modules changed without any gateway test
noticing (docs/testing.md, mutation testing)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress import bookkeeping, routes, tokens, upstream
from sandbox_lifecycle.adapters.egress.bodies import SANDBOX_BUFFER_BYTES, Shares

# --- tokens ---------------------------------------------------------------------------------------


def test_a_token_names_its_sandbox_and_carries_64_hex_digits(tmp_path: Path) -> None:
    token = tokens.issue_token(tmp_path, "sbx1")
    prefix, random_part = token.rsplit("-", 1)
    assert prefix == "sbx-sbx1"
    assert len(random_part) == 64 and int(random_part, 16) >= 0
    assert tokens.check_token(tmp_path, token) == ("sbx1", "")
    assert tokens.token_owner(tmp_path, token) == "sbx1"
    # Shorter or longer random parts are not tokens at all.
    assert tokens.check_token(tmp_path, token[:-1]) == (None, tokens.MALFORMED)
    assert tokens.check_token(tmp_path, token + "0") == (None, tokens.MALFORMED)
    assert tokens.check_token(tmp_path, token.upper()) == (None, tokens.MALFORMED)


def test_only_the_hash_is_stored_privately(tmp_path: Path) -> None:
    state_dir = tmp_path / "not-yet" / "egress"  # made on the first token
    token = tokens.issue_token(state_dir, "sbx1")
    path = tokens.tokens_dir(state_dir) / "sbx1"
    assert path == state_dir / "tokens" / "sbx1"
    assert token not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["sbx1"]  # no temporary file left


@pytest.mark.parametrize("bad", ["a/../../escape", "..", ".", "", ".hidden", "a/b", "x" * 129, "a b"])
def test_a_sandbox_id_that_is_not_a_file_name_label_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        tokens.issue_token(tmp_path, bad)
    with pytest.raises(ValueError):
        tokens.revoke_token(tmp_path, bad)
    assert not (tmp_path / "escape").exists()


def test_the_longest_sandbox_id_is_accepted(tmp_path: Path) -> None:
    longest = "a" + "b" * 127
    assert tokens.check_sandbox_id(longest) == longest
    assert tokens.token_owner(tmp_path, tokens.issue_token(tmp_path, longest)) == longest


def test_replace_revokes_the_earlier_token_and_revoke_is_idempotent(tmp_path: Path) -> None:
    first = tokens.issue_token(tmp_path, "sbx1")
    second = tokens.issue_token(tmp_path, "sbx1")  # replace is the default: create and resume
    assert tokens.check_token(tmp_path, first) == (None, tokens.REVOKED)
    third = tokens.issue_token(tmp_path, "sbx1", replace=False)
    assert tokens.token_owner(tmp_path, second) == tokens.token_owner(tmp_path, third) == "sbx1"
    second = tokens.issue_token(tmp_path, "sbx1", replace=True)
    assert tokens.check_token(tmp_path, third) == (None, tokens.REVOKED)
    assert tokens.token_owner(tmp_path, second) == "sbx1"
    tokens.revoke_token(tmp_path, "sbx1")
    tokens.revoke_token(tmp_path, "sbx1")
    assert tokens.check_token(tmp_path, second) == (None, tokens.REVOKED)


def test_the_newest_live_tokens_stay_valid_and_the_oldest_is_dropped(tmp_path: Path) -> None:
    issued = [tokens.issue_token(tmp_path, "sbx1", replace=False) for _ in range(tokens.MAX_LIVE_TOKENS + 1)]
    assert tokens.MAX_LIVE_TOKENS == 8
    assert tokens.check_token(tmp_path, issued[0]) == (None, tokens.REVOKED)
    assert [tokens.token_owner(tmp_path, t) for t in issued[1:]] == ["sbx1"] * tokens.MAX_LIVE_TOKENS


def test_a_well_formed_token_nobody_issued_is_revoked_not_malformed(tmp_path: Path) -> None:
    guess = f"sbx-sbx1-{'0' * 64}"
    assert tokens.check_token(tmp_path, guess) == (None, tokens.REVOKED)  # no tokens directory at all
    tokens.issue_token(tmp_path, "sbx1")
    assert tokens.check_token(tmp_path, guess) == (None, tokens.REVOKED)
    (tmp_path / "other").write_text("")
    assert tokens.check_token(tmp_path / "other", guess) == (None, tokens.REVOKED)  # not a directory


# --- upstream -------------------------------------------------------------------------------------


def test_an_upstream_url_gives_scheme_port_and_base_path() -> None:
    up = upstream.parse_upstream("https://api.example.com/base/", "key")
    assert (up.scheme, up.host, up.port, up.base_path) == ("https", "api.example.com", 443, "/base")
    assert up.host_header == "api.example.com"
    assert up.key == ("https", "api.example.com", 443, "api.example.com")
    assert "key" not in repr(up)
    plain = upstream.parse_upstream("http://api.example.com", "key")
    assert (plain.port, plain.base_path, plain.host_header) == (80, "", "api.example.com")


def test_the_host_header_names_a_port_only_when_it_is_not_the_schemes() -> None:
    assert upstream.parse_upstream("https://h.example:8443", "k").host_header == "h.example:8443"
    assert upstream.parse_upstream("http://h.example:443", "k").host_header == "h.example:443"
    assert upstream.parse_upstream("https://h.example:80", "k").host_header == "h.example:80"
    assert upstream.parse_upstream("http://[::1]:8080", "k").host_header == "[::1]:8080"
    assert upstream.parse_upstream("http://[::1]", "k").host_header == "[::1]"


def test_an_upstream_with_a_checked_address_connects_there() -> None:
    up = upstream.Upstream("https", "h.example", 443, "", "k", address="192.0.2.7")
    assert up.key == ("https", "h.example", 443, "192.0.2.7")


@pytest.mark.parametrize("bad", ["ftp://h.example", "http://", "h.example", "https:///path"])
def test_an_upstream_url_that_is_not_http_to_a_host_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        upstream.parse_upstream(bad, "k")


def test_hop_by_hop_named_and_dropped_headers_are_filtered_whatever_their_case() -> None:
    headers = [
        ("Host", "h"),
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "1"),
        ("Transfer-Encoding", "chunked"),
        ("X-API-Key", "sbx-token"),
        ("Anthropic-Version", "2023-06-01"),
        ("TE", "trailers"),
    ]
    kept = upstream.filtered(headers, upstream.CREDENTIAL_HEADERS)
    assert kept == [("Host", "h"), ("Anthropic-Version", "2023-06-01")]
    assert upstream.filtered([("X-API-Key", "v")], frozenset()) == [("X-API-Key", "v")]
    assert upstream.connection_tokens(headers) == {"keep-alive", "x-private"}


# --- bookkeeping ----------------------------------------------------------------------------------


def test_calls_are_counted_per_sandbox_and_status(tmp_path: Path) -> None:
    bookkeeping.count_call(tmp_path, "sbx1", 10, 100, 200)
    bookkeeping.count_call(tmp_path, "sbx1", 5, 7, 0)
    bookkeeping.count_call(tmp_path, "sbx1", 1, 2, 200)
    bookkeeping.count_call(tmp_path, "sbx2", 3, 4, 429)
    path = tmp_path / "counters" / "sbx1.json"
    assert json.loads(path.read_text()) == {
        "requests": 3,
        "bytes_in": 16,
        "bytes_out": 109,
        "status": {"200": 2, "none": 1},
    }
    assert json.loads((tmp_path / "counters" / "sbx2.json").read_text())["status"] == {"429": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "counters" / ".sbx1.json.tmp").exists()


def test_counters_that_cannot_be_read_or_written_do_not_fail_the_call(tmp_path: Path) -> None:
    (tmp_path / "counters").mkdir()
    (tmp_path / "counters" / "sbx1.json").write_text("{not json")
    bookkeeping.count_call(tmp_path, "sbx1", 1, 1, 200)  # logged, not raised
    (tmp_path / "file").write_text("")
    bookkeeping.count_call(tmp_path / "file", "sbx1", 1, 1, 200)
    bookkeeping.touch_activity(tmp_path / "file", "sbx1")


def test_a_model_call_moves_the_sandboxs_activity_time(tmp_path: Path) -> None:
    bookkeeping.touch_activity(tmp_path, "sbx1")
    path = tmp_path / "activity" / "sbx1"
    long_ago = time.time() - 3600
    os.utime(path, (long_ago, long_ago))
    bookkeeping.touch_activity(tmp_path, "sbx1")
    assert path.stat().st_mtime > time.time() - 60


# --- routes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages?beta=true"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models?limit=20&after_id=x"),
        ("GET", "/v1/models/claude-x.1"),
    ],
)
def test_model_calls_in_normal_form_are_forwarded_unchanged(method: str, target: str) -> None:
    assert routes.model_call(method, target) == target


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1/messages"),
        ("POST", "/v1/models"),
        ("POST", "/v1/messages/"),
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/models/-x"),
        ("GET", "/v1/models/a/b"),
        ("GET", "/v1/models/.."),
        ("GET", "/v1/models/..."),
        ("POST", "v1/messages"),
        ("POST", "/v1/messages?a=b&c d"),
        ("POST", "/v1/messages?a=%2"),
        ("GET", "/v1/files"),
    ],
)
def test_other_calls_are_not_forwarded(method: str, target: str) -> None:
    assert routes.model_call(method, target) is None


def test_a_git_route_names_host_port_and_the_path_on_it() -> None:
    route = routes.git_route("GET", "/git/Git.Example./org/repo.git/info/refs?service=git-upload-pack")
    assert route == routes.GitRoute("git.example", 443, "/org/repo.git/info/refs?service=git-upload-pack")
    push = routes.git_route("POST", "/git/git.example:8443/org/repo.git/git-receive-pack")
    assert push == routes.GitRoute("git.example", 8443, "/org/repo.git/git-receive-pack")
    assert routes.parse_git_route("POST", "/git/git.example:8443/repo/git-upload-pack") == (
        "git.example:8443",
        "/repo/git-upload-pack",
    )
    assert routes.parse_git_route("POST", "/git/git.example/repo/git-upload-pack") == (
        "git.example",
        "/repo/git-upload-pack",
    )
    assert routes.git_route("POST", "/git/h.example:65535/repo/git-upload-pack") is not None
    for repo in ("r", "a/b/r"):
        refs = f"/{repo}/info/refs?service=git-receive-pack"
        assert routes.git_route("GET", f"/git/h.example{refs}") == routes.GitRoute("h.example", 443, refs)
    assert routes.git_route("POST", "/git/h.example:1/repo/git-upload-pack") == routes.GitRoute(
        "h.example", 1, "/repo/git-upload-pack"
    )


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/git/git.example/repo/info/refs"),  # no service
        ("GET", "/git/git.example/repo/info/refs?service=other"),
        ("POST", "/git/git.example/repo/info/refs?service=git-upload-pack"),
        ("GET", "/git/git.example/repo/git-upload-pack"),
        ("POST", "/git/git.example/repo/git-upload-pack?x=1"),
        ("POST", "/git/git.example/git-upload-pack"),  # no repository
        ("GET", "/git/git.example/info/refs?service=git-upload-pack"),
        ("POST", "/git/git.example/repo/other"),
        ("POST", "/git/git.example:0/repo/git-upload-pack"),
        ("POST", "/git/git.example:65536/repo/git-upload-pack"),
        ("POST", "/git/git.example"),
        ("POST", "/git/-x/repo/git-upload-pack"),
        ("POST", "/git/git.example/../repo/git-upload-pack"),
        ("POST", "/gits/git.example/repo/git-upload-pack"),
        ("POST", "/git/git.example/" + "a/" * routes.MAX_GIT_SEGMENTS + "git-upload-pack"),
    ],
)
def test_other_git_requests_are_not_routed(method: str, target: str) -> None:
    assert routes.git_route(method, target) is None
    assert routes.parse_git_route(method, target) is None


def test_a_git_route_may_hold_the_most_segments() -> None:
    deepest = "/git/h.example/" + "a/" * (routes.MAX_GIT_SEGMENTS - 1) + "git-upload-pack"
    assert routes.git_route("POST", deepest) is not None


# --- shares of held bodies ------------------------------------------------------------------------


def test_each_sandbox_holds_bodies_up_to_its_own_share() -> None:
    shares = Shares()
    assert shares.reserve("a", SANDBOX_BUFFER_BYTES)
    assert not shares.reserve("a", 1)
    assert shares.reserve("b", 1)
    shares.release("a", 1)
    assert shares.held("a") == SANDBOX_BUFFER_BYTES - 1
    assert shares.reserve("a", 1) and not shares.reserve("a", 1)
    shares.release("a", SANDBOX_BUFFER_BYTES)
    assert shares.held("a") == 0
    shares.release("b", 5)  # more than held: nothing negative is kept
    assert shares.held("b") == 0 and shares.reserve("b", SANDBOX_BUFFER_BYTES)


def test_a_token_that_cannot_be_stored_is_not_handed_out(tmp_path: Path) -> None:
    (tmp_path / "tokens" / "sbx1").mkdir(parents=True)  # in the way of the file
    with pytest.raises(OSError):
        tokens.issue_token(tmp_path, "sbx1")
    assert [p.name for p in (tmp_path / "tokens").iterdir()] == ["sbx1"]  # no temporary file left
