"""What may be a credential header, where it is kept, and the deployment-wide form from the environment.

Properties: a value with a CR, LF or any other control byte is never accepted (by the core's check, the
egress point's, or the environment's parser); the core and the egress point agree on every name and
value; a refusal never repeats a value; what is accepted goes on one line of an HTTP head.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.egress.credentials import (
    CredentialStore,
    credential_host,
    header_ok,
    host_key,
    remove_credentials,
    write_credentials,
    write_deployment_credentials,
)
from sandbox_lifecycle.adapters.egress.inject import Redactor, request_head, upgraded_port
from sandbox_lifecycle.adapters.gateway.credentials import parse_credentials_env, prepare_credentials
from sandbox_lifecycle.core.credentials import FORBIDDEN, check_headers, check_host

names = st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), min_size=0, max_size=70)
values = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), min_size=0, max_size=60)
SECRET = "s3cr3t-PLANTED-value"


def _core_ok(name: str, value: str) -> bool:
    try:
        check_headers({name: value})
        return True
    except ValueError:
        return False


@given(names, values)
def test_the_core_and_the_egress_point_agree_and_nothing_accepted_breaks_a_head(
    name: str, value: str
) -> None:
    accepted = header_ok(name, value)
    assert accepted == _core_ok(name, value)
    if accepted:
        line = f"{name}: {value}".encode("ascii")
        assert b"\r" not in line and b"\n" not in line and b"\0" not in line
        assert value == value.strip() and name.lower() not in FORBIDDEN


@given(st.builds(lambda a, c, b: a + c + b, values, st.sampled_from("\r\n\0\x7f\x01\x1b"), values))
def test_a_value_with_a_line_break_or_control_byte_is_never_accepted(value: str) -> None:
    assert not header_ok("Authorization", value)
    with pytest.raises(ValueError) as refused:
        check_headers({"Authorization": value})
    assert value not in str(refused.value) or not value.strip()


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer V-PLANTED\r\nHost: evil.test"},
        {"Authorization": "Bearer V-PLANTED\nX: y"},
        {"Authorization": " leading"},
        {"Authorization": "trailing "},
        {"Authorization": "é"},
        {"Host": "V-PLANTED"},
        {"Transfer-Encoding": "chunked"},
        {"Proxy-Authorization": "V-PLANTED"},
        {"Content-Length": "0"},
        {"X-Sandbox-Egress": "refused"},
        {"": "V-PLANTED"},
        {"A:B": "V-PLANTED"},
        {"x" * 65: "V-PLANTED"},
        {"X-Long": "x" * 8193},
    ],
)
def test_edges_are_refused_without_repeating_the_value(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError) as refused:
        check_headers({**headers})
    for value in headers.values():
        assert value.strip() == "" or value not in str(refused.value)


def test_too_many_headers_or_not_a_mapping() -> None:
    with pytest.raises(ValueError, match="at most 16"):
        check_headers({f"X-{i}": "v" for i in range(17)})
    check_headers({f"X-{i}": "v" for i in range(16)})
    with pytest.raises(ValueError, match="mapping"):
        check_headers("Authorization: x")  # type: ignore[arg-type]
    assert check_headers({"X-Long": "x" * 8192, "X-Tab": "a\tb"}) == {"X-Long": "x" * 8192, "X-Tab": "a\tb"}


def test_hosts() -> None:
    assert check_host("API.Example.test.") == "api.example.test"
    assert check_host("pkgs.test:8443") == "pkgs.test:8443"
    for bad in ("a b", "", "x/y", "h:port", ":443"):
        with pytest.raises(ValueError):
            check_host(bad)
    assert credential_host(["api.test"], "api.test") == "api.test"
    assert credential_host(["api.test"], "api.test:443") == "api.test"
    assert credential_host(["*.pkgs.test"], "x.pkgs.test") == "x.pkgs.test"
    assert credential_host(["api.test:8443"], "api.test:8443") == "api.test:8443"
    for allow, host in [
        (["api.test"], "other.test"),
        (["api.test"], "api.test:8443"),
        (["api.test:80"], "api.test"),
    ]:
        with pytest.raises(ValueError, match="not in the sandbox's allow-list"):
            credential_host(allow, host)
    with pytest.raises(ValueError, match="1-65535"):
        credential_host(["api.test"], "api.test:0")
    assert host_key("h.test", 443) == "h.test" and host_key("h.test", 80) == "h.test:80"
    assert [upgraded_port(p) for p in (80, 443, 8443)] == [443, 443, 8443]


def test_files_are_private_and_a_sandbox_s_own_win_over_the_deployment_s(tmp_path: Path) -> None:
    write_deployment_credentials(tmp_path, {"api.test": [("X-Team", "deploy")], "b.test": [("X-B", "b")]})
    write_credentials(tmp_path, "s1", "api.test", {"Authorization": SECRET})
    store = CredentialStore(tmp_path)
    assert store.for_request("s1", "api.test", 443) == [("Authorization", SECRET)]
    assert store.for_request("s2", "api.test", 443) == [("X-Team", "deploy")]
    assert store.for_request("s1", "b.test", 443) == [("X-B", "b")]
    assert store.for_request("s1", "api.test", 8443) == []
    assert store.for_request("../x", "api.test", 443) == []
    folder = tmp_path / "credentials"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    write_credentials(tmp_path, "s1", "api.test", {})
    assert json.loads((folder / "s1.json").read_text()) == {}
    remove_credentials(tmp_path, "s1")
    remove_credentials(tmp_path, "s1")
    assert not (folder / "s1.json").exists()
    with pytest.raises(ValueError) as refused:
        write_credentials(tmp_path, "s1", "api.test", {"Authorization": SECRET + "\r\n"})
    assert SECRET not in str(refused.value)


def test_a_hand_edited_file_is_used_only_as_the_rules_allow(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "s1.json").write_text(
        json.dumps(
            {"api.test": [["Authorization", "ok"], ["X-Bad", "a\r\nb"], ["Host", "x"], "junk"], "b.test": 3}
        )
    )
    assert CredentialStore(tmp_path).for_request("s1", "api.test", 443) == [("Authorization", "ok")]
    (folder / "s1.json").write_text("[1]")
    assert CredentialStore(tmp_path).for_request("s1", "api.test", 443) == []
    (folder / "s1.json").write_text("{not json")
    assert CredentialStore(tmp_path).for_request("s1", "api.test", 443) == []


def test_the_environment_form_names_variables_and_never_shows_a_value() -> None:
    environ = {"AUTH": "Bearer " + SECRET, "TEAM": "t1", "BAD": SECRET + "\n"}
    assert parse_credentials_env(
        "API.test=Authorization:AUTH,X-Team:TEAM; pkgs.test:8443=X-T:TEAM;", environ
    ) == {
        "api.test": [("Authorization", "Bearer " + SECRET), ("X-Team", "t1")],
        "pkgs.test:8443": [("X-T", "t1")],
    }
    assert parse_credentials_env("api.test:443=X:TEAM", environ) == {"api.test": [("X", "t1")]}
    for text, why in [
        ("api.test", "entry 1"),
        ("a b=X:AUTH", "entry 1"),
        ("api.test:0=X:AUTH", "entry 1"),
        ("api.test=X:MISSING", "MISSING"),
        ("api.test=X", "Header:VARIABLE"),
        ("api.test=X:1BAD", "Header:VARIABLE"),
        ("api.test=X:BAD", "the value of BAD"),
        ("api.test=Host:AUTH", "'Host'"),
        ("api.test=X:AUTH,x:TEAM", "twice"),
        ("api.test=X:AUTH;api.test:443=Y:TEAM", "named twice"),
    ]:
        with pytest.raises(ValueError, match=why) as refused:
            parse_credentials_env(text, environ)
        assert SECRET not in str(refused.value)


@given(st.text(max_size=80))
def test_the_environment_parser_never_repeats_a_value(text: str) -> None:
    environ = {"V": SECRET, "W": SECRET + "\r\n"}
    try:
        parse_credentials_env(text, environ)
    except ValueError as refused:
        assert SECRET not in str(refused)


def test_prepare_writes_the_deployment_s_credentials_and_its_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    prepare_credentials(tmp_path / "state", {"api.test": [("X", "v")]}, ca)
    assert (tmp_path / "state" / "credentials-ca.pem").read_text() == ca.read_text()
    assert oct((tmp_path / "state" / "credentials-ca.pem").stat().st_mode & 0o777) == oct(0o644)
    assert CredentialStore(tmp_path / "state").for_request("any", "api.test", 443) == [("X", "v")]
    prepare_credentials(tmp_path / "state", {}, None)
    assert not (tmp_path / "state" / "credentials-ca.pem").exists()
    assert CredentialStore(tmp_path / "state").for_request("any", "api.test", 443) == []
    assert not [p for p in os.listdir(tmp_path / "state") if p.endswith(".tmp")]


def test_the_head_sent_on_replaces_the_sandbox_s_headers_of_those_names() -> None:
    head = request_head(
        b"GET",
        b"/x",
        b"HTTP/1.1",
        [(b"authorization", b"mine"), (b"Accept", b"*/*"), (b"X-TEAM", b"m")],
        "api.test",
        443,
        [("Authorization", SECRET), ("X-Team", "t")],
    )
    assert head == (
        b"GET /x HTTP/1.1\r\nAccept: */*\r\nAuthorization: " + SECRET.encode() + b"\r\nX-Team: t\r\n"
        b"Accept-Encoding: identity\r\nHost: api.test\r\nConnection: close\r\n\r\n"
    )
    assert b"Host: api.test:8443\r\n" in request_head(b"GET", b"/", b"HTTP/1.0", [], "api.test", 8443, [])


@given(st.lists(st.integers(0, 200), max_size=12), st.binary(max_size=30), st.binary(max_size=30))
def test_redaction_holds_however_the_stream_is_cut(at: list[int], before: bytes, after: bytes) -> None:
    value = "Bearer " + SECRET
    stream = before + value.encode() + b"between" + SECRET.encode() + after
    cuts = sorted({min(c, len(stream)) for c in at} | {0, len(stream)})
    redactor = Redactor([value])
    out = b"".join(redactor.feed(stream[a:b]) for a, b in itertools.pairwise(cuts)) + redactor.flush()
    assert len(out) == len(stream)
    assert SECRET.encode() not in out and b"Bearer " + SECRET.encode() not in out


def test_short_words_of_a_value_are_not_redacted_alone() -> None:
    redactor = Redactor(["Bearer abc"])
    assert redactor.feed(b"Bearer abc; Bearer x") + redactor.flush() == b"**********; Bearer x"
    assert Redactor([]).feed(b"plain") == b"plain"


def test_boundaries_of_hosts_words_and_the_deployment_file(tmp_path: Path) -> None:
    assert credential_host(["api.test:65535"], "api.test:65535") == "api.test:65535"
    with pytest.raises(ValueError, match="1-65535"):
        credential_host(["api.test"], "api.test:65536")
    with pytest.raises(ValueError, match="unreadable"):
        credential_host(["not a host"], "api.test")
    # A word of exactly MIN_WORD characters is redacted on its own.
    redactor = Redactor(["Bearer abcdefgh"])
    assert redactor.feed(b"token abcdefgh.") + redactor.flush() == b"token ********."
    for bad in [("Host", "api.test"), ("X", "v\r\n")]:
        with pytest.raises(ValueError, match="cannot be sent"):
            write_deployment_credentials(tmp_path, {"api.test": [bad]})
    assert not (tmp_path / "credentials" / "deployment.json").exists()


def test_empty_entries_of_the_environment_form_are_skipped() -> None:
    assert parse_credentials_env(";; api.test=X:TEAM ;", {"TEAM": "t"}) == {"api.test": [("X", "t")]}


def test_the_environment_form_s_port_boundaries_and_a_repeated_prepare(tmp_path: Path) -> None:
    assert parse_credentials_env("api.test:65535=X:T", {"T": "t"}) == {"api.test:65535": [("X", "t")]}
    with pytest.raises(ValueError, match="entry 1"):
        parse_credentials_env("api.test:65536=X:T", {"T": "t"})
    prepare_credentials(tmp_path, {}, None)
    prepare_credentials(tmp_path, {}, None)  # no CA file to remove: still fine
    assert not (tmp_path / "credentials-ca.pem").exists()


def test_a_credential_under_a_path_prefix_serves_only_requests_under_it(tmp_path: Path) -> None:
    """A push's token (core/git.py) is kept under the repository's path: another request to the host
    gets the host's own credential (the backend's, untouched by the push's removal) or none."""
    write_credentials(tmp_path, "s1", "git.test", {"Authorization": "Bearer backend"})
    write_credentials(tmp_path, "s1", "git.test/org/repo.git/", {"Authorization": "Basic push"})
    store = CredentialStore(tmp_path)
    push = [("Authorization", "Basic push")]
    backend = [("Authorization", "Bearer backend")]
    assert store.for_request("s1", "git.test", 443, "/org/repo.git/info/refs") == push
    assert store.for_request("s1", "git.test", 443, "/org/repo.git/git-receive-pack") == push
    for other in [
        "/org/repo.git",
        "/org/repo.gitx/info/refs",
        "/org/other.git/info/refs",
        "/org/repo.git/../other.git/info/refs",
        "/org/repo.git/%2e%2e/other.git/info/refs",
        "/org/repo.git//x",
        "/",
    ]:
        assert store.for_request("s1", "git.test", 443, other) == backend, other
    write_credentials(tmp_path, "s1", "git.test/org/repo.git/", {})
    assert store.for_request("s1", "git.test", 443, "/org/repo.git/info/refs") == backend
    write_credentials(tmp_path, "s1", "git.test", {})
    write_credentials(tmp_path, "s1", "git.test/org/repo.git/", {"Authorization": "Basic push"})
    assert store.for_request("s1", "git.test", 443, "/someone-else/private.git/info/refs") == []


@pytest.mark.parametrize(
    "host", ["api.test/../x/", "api.test/a", "api.test/./", "api.test/a//", "api.test/a%2f/"]
)
def test_a_path_prefix_is_plain_segments(host: str) -> None:
    with pytest.raises(ValueError):
        credential_host(["api.test"], host)
    assert credential_host(["api.test"], "api.test/Org/Repo.git/") == "api.test/Org/Repo.git/"


def test_the_core_keeps_a_path_prefix_as_given_and_the_name_in_lower_case() -> None:
    assert check_host("Git.Test./Org/Repo.git/") == "git.test/Org/Repo.git/"
    for bad in ["git.test/../", "git.test/a", "git.test/a%2f/", "git.test//"]:
        with pytest.raises(ValueError):
            check_host(bad)
