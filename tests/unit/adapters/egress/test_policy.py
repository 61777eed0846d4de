"""The egress policy and proxy without Docker: rules, pins, address checks, and the proxy on loopback.

On loopback, the proxy's policy covers 127.0.0.0/8 as if it were a sandbox network; upstream servers
are this test's, reached by pinned names.
"""

from __future__ import annotations

import http.server
import ipaddress
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.egress.policy import (
    Policy,
    PolicyBook,
    PolicyError,
    is_raw_ip,
    parse_pin,
    parse_rule,
    parse_rules,
    policy_document,
    refused_address,
    remove_policy,
    write_policy,
)
from sandbox_lifecycle.adapters.egress.proxy import EgressProxy
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.core.errors import ConfigError


def policy(allow: tuple[str, ...], resolve: tuple[str, ...] = ()) -> Policy:
    from sandbox_lifecycle.adapters.egress.policy import load_policy

    return load_policy(
        policy_document("s1", "data-app", "127.0.0.0/8", allow, resolve, "SANDBOX_EGRESS_ALLOW_DATA_APP")
    )


def test_rules_match_names_wildcards_and_ports() -> None:
    rule = parse_rule("api.example.com")
    assert rule.matches("api.example.com", 443) and rule.matches("api.example.com", 80)
    assert not rule.matches("api.example.com", 8443) and not rule.matches("example.com", 443)
    wild = parse_rule("*.Example.com:8443")
    assert wild.matches("a.b.example.com", 8443) and not wild.matches("example.com", 8443)
    assert not wild.matches("evil-example.com", 8443) and not wild.matches("a.example.com", 443)
    for bad in ("exa mple.com", "host:0", "host:99999", "*.", "a..b"):
        with pytest.raises(PolicyError):
            parse_rule(bad)
    # E2B accepts IPs and CIDRs; the proxy refuses raw IPs whatever the list says, so they make no rule.
    assert parse_rules(["10.0.0.0/8", "1.2.3.4", "ok.test"]) == (parse_rule("ok.test"),)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1", "0x7f.0.0.1", "2130706433", "[::1]", "::ffff:10.0.0.1"]
)
def test_every_literal_address_form_is_a_raw_ip(host: str) -> None:
    assert is_raw_ip(host)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.17.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # CGNAT
        ("169.254.169.254", "link-local"),
        ("fd00:ec2::254", "private"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "private"),
    ],
)
def test_addresses_sandboxes_may_not_reach(address: str, why: str) -> None:
    reason = refused_address(address)
    assert reason is not None and why in reason


def test_public_addresses_pass() -> None:
    assert refused_address("1.1.1.1") is None and refused_address("2606:4700::1111") is None


def test_decisions_resolve_once_and_connect_to_the_checked_address() -> None:
    rules = policy(("ok.test", "pinned.test:9000"), ("pinned.test:9000:10.9.9.9",))
    # The first public answer is the one connected to: a rebinding second answer is never used.
    assert (
        rules.decide("OK.test.", 443, lambda h, p: ["10.0.0.1", "1.1.1.1", "127.0.0.1"]).address == "1.1.1.1"
    )
    only_private = rules.decide("ok.test", 443, lambda h, p: ["10.0.0.1"])
    assert only_private.status == 403 and "SANDBOX_EGRESS_RESOLVE=ok.test:443:10.0.0.1" in only_private.reason
    # A pin is allowed even when private, and needs no resolver.
    assert rules.decide("pinned.test", 9000, _no_resolver).address == "10.9.9.9"
    unlisted = rules.decide("other.test", 443, _no_resolver)
    assert unlisted.status == 403 and "add other.test to SANDBOX_EGRESS_ALLOW_DATA_APP" in unlisted.reason
    odd_port = rules.decide("ok.test", 8080, _no_resolver)
    assert "add ok.test:8080 to" in odd_port.reason
    raw = rules.decide("1.1.1.1", 443, _no_resolver)
    assert raw.status == 403 and "raw IP" in raw.reason


def _no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError("must not resolve")


def test_pins_are_curl_resolve_entries() -> None:
    assert parse_pin("a.test:443:10.0.0.1") == ("a.test", 443, "10.0.0.1")
    assert parse_pin("a.test:443:[::1]") == ("a.test", 443, "::1")
    for bad in ("a.test:443", "a.test:x:10.0.0.1", "a.test:443:not-an-ip"):
        with pytest.raises(PolicyError):
            parse_pin(bad)


def test_the_book_finds_a_policy_by_source_and_rereads_on_change(tmp_path: Path) -> None:
    book = PolicyBook(str(tmp_path))
    assert book.for_source("10.213.0.2") is None
    write_policy(str(tmp_path), policy_document("s1", "data-app", "10.213.0.0/28", ["a.test"], [], "V"))
    found = book.for_source("10.213.0.2")
    assert found is not None and found.sandbox_id == "s1"
    assert book.for_source("10.213.0.17") is None
    remove_policy(str(tmp_path), "s1")
    assert book.for_source("10.213.0.2") is None


# ------------------------------------------------------------------------------------ proxy on loopback


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.path} host={self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(tmp_path: Path, upstream: int) -> Iterator[int]:
    write_policy(
        str(tmp_path),
        policy_document(
            "s1",
            "data-app",
            "127.0.0.0/8",
            [f"up.test:{upstream}"],
            [f"up.test:{upstream}:127.0.0.1"],
            "V_ALLOW",
        ),
    )
    lines: list[str] = []
    egress = EgressProxy(PolicyBook(str(tmp_path)), log=lines.append)
    server = egress.bind("127.0.0.1", 0)
    threading.Thread(target=egress.serve_forever, daemon=True).start()
    yield server.getsockname()[1]
    egress.close()


def _opener(proxy_port: int) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy_port}"})
    )


def test_plain_http_is_forwarded_with_the_checked_host(proxy: int, upstream: int) -> None:
    request = urllib.request.Request(f"http://up.test:{upstream}/x?y=1", headers={"Host": "forged.test"})
    with _opener(proxy).open(request, timeout=10) as answer:
        assert answer.read().decode() == f"hello /x?y=1 host=up.test:{upstream}"


def test_a_refusal_is_a_403_naming_host_and_variable(proxy: int) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        _opener(proxy).open("http://nope.test:80/", timeout=10)
    assert refused.value.code == 403
    assert "nope.test" in refused.value.read().decode()


def test_connect_tunnels_bytes_both_ways(proxy: int, upstream: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as sock:
        # The request inside the tunnel is sent at once, before the proxy has answered.
        inner = b"GET /t HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        sock.sendall(
            f"CONNECT up.test:{upstream} HTTP/1.1\r\nHost: up.test:{upstream}\r\n\r\n".encode() + inner
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200")
    assert data.endswith(b"hello /t host=h")


def test_a_source_outside_every_sandbox_network_is_refused(tmp_path: Path) -> None:
    egress = EgressProxy(PolicyBook(str(tmp_path)), log=lambda line: None)
    server = egress.bind("127.0.0.1", 0)
    threading.Thread(target=egress.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(server.getsockname(), timeout=10) as sock:
            sock.sendall(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
            assert b"403" in sock.recv(4096).split(b"\r\n")[0]
    finally:
        egress.close()


# ----------------------------------------------------------------------------------------- settings


def test_settings_parse_the_egress_variables(tmp_path: Path) -> None:
    env = {
        "SANDBOX_DATA_DIR": str(tmp_path),
        "SANDBOX_EGRESS_ALLOW_DATA_APP": "a.test, *.b.test:8443",
        "SANDBOX_LIGHTDASH_URL": "http://lightdash.test:8080/projects",
        "SANDBOX_EGRESS_RESOLVE": "a.test:443:172.17.0.1",
        "SANDBOX_EGRESS_STATE_DIR": str(tmp_path / "egress"),
        "ANTHROPIC_BASE_URL": "https://model.test:9000",
    }
    egress = Settings.from_env(env).provider_settings["docker"].egress
    assert egress.allow["data-app"] == ("a.test", "*.b.test:8443", "lightdash.test:8080")
    assert (
        "lightdash.test:8080" in egress.allow["ai-writeback"] and "github.com" in egress.allow["ai-writeback"]
    )
    assert egress.resolve == ("a.test:443:172.17.0.1",)
    assert egress.state_dir == tmp_path / "egress" and egress.upstream_url == "https://model.test:9000"
    assert (
        Settings.from_env(env).provider_settings["e2b"].egress_allow["data-app"][-1] == "lightdash.test:8080"
    )
    defaults = Settings.from_env({"SANDBOX_DATA_DIR": str(tmp_path)})
    # One state dir for the egress point and the gateway: the deployment's, read once.
    assert defaults.provider_settings["docker"].egress == EgressSettings(
        allow=defaults.provider_settings["e2b"].egress_allow, state_dir=defaults.egress_state_dir
    )


def test_bad_egress_variables_are_named_together(tmp_path: Path) -> None:
    env = {
        "SANDBOX_DATA_DIR": str(tmp_path),
        "SANDBOX_EGRESS_ALLOW_DATA_APP": "bad host",
        "SANDBOX_EGRESS_RESOLVE": "a.test:443",
        "SANDBOX_LIGHTDASH_URL": "ftp://x",
        "SANDBOX_DOCKER_NETWORK_POOL": "10.0.0.0/30",
    }
    with pytest.raises(ConfigError) as bad:
        Settings.from_env(env)
    text = str(bad.value)
    for name in (
        "SANDBOX_EGRESS_ALLOW_DATA_APP",
        "SANDBOX_EGRESS_RESOLVE",
        "SANDBOX_LIGHTDASH_URL",
        "SANDBOX_DOCKER_NETWORK_POOL",
    ):
        assert name in text
    assert text.count("SANDBOX_LIGHTDASH_URL") == 1


def test_policy_files_are_written_atomically_for_the_proxy(tmp_path: Path) -> None:
    path = write_policy(str(tmp_path), policy_document("s9", "ai-writeback", "10.213.1.0/28", [], [], "V"))
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [n for n in os.listdir(tmp_path / "policies")] == ["s9.json"]
    found = PolicyBook(str(tmp_path)).for_source("10.213.1.5")
    assert found is not None and found.subnet == ipaddress.ip_network("10.213.1.0/28")
