"""Which network a gateway token may be used from, and where a git request may go (outbound.Outbound).

Decisions only: no connection is made. Each test pins a behaviour a one-line mutant of outbound.py
changed unnoticed (docs/testing.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.outbound import Outbound, Refusal, Target
from sandbox_lifecycle.adapters.egress.policy import POLICY_DIR, policy_document, write_policy

ADDRESSES = {"git.test": ["203.0.114.7"], "inside.test": ["10.0.0.9"]}


def resolver(host: str, _port: int) -> list[str]:
    if host not in ADDRESSES:
        raise OSError("unknown name")
    return ADDRESSES[host]


@pytest.fixture
def outbound(tmp_path: Path) -> Outbound:
    write_policy(
        str(tmp_path),
        policy_document(
            "docker1",
            "ai-writeback",
            "10.1.0.0/28",
            ["git.test", "pinned.test:8443", "nowhere.test", "inside.test"],
            ["pinned.test:8443:192.0.2.44"],
            "SANDBOX_EGRESS_ALLOW_AI_WRITEBACK",
        ),
    )
    return Outbound(tmp_path, resolver)


def test_a_token_is_valid_only_from_its_own_sandboxs_network(outbound: Outbound) -> None:
    assert outbound.token_fits_network("docker1", "10.1.0.2")
    assert not outbound.token_fits_network("e2b1", "10.1.0.2")
    # Outside every sandbox network (or no address at all): only a sandbox without a network's token.
    for peer in ("203.0.113.5", None, "not-an-address"):
        assert outbound.token_fits_network("e2b1", peer)
        assert not outbound.token_fits_network("docker1", peer)
    assert outbound.source_policy("not-an-address") is None
    policy = outbound.source_policy("10.1.0.2")
    assert policy is not None and policy.sandbox_id == "docker1"
    assert outbound.sandbox_policy("e2b1") is None


def test_a_sandbox_with_a_policy_reaches_by_git_only_what_it_allows(outbound: Outbound) -> None:
    assert outbound.git_target("docker1", "git.test", 443, {}) == Target(
        "https", "git.test", 443, "203.0.114.7", ""
    )
    assert outbound.git_target("docker1", "pinned.test", 8443, {"token": "t"}) == Target(
        "https", "pinned.test", 8443, "192.0.2.44", ""
    )
    assert outbound.git_target("docker1", "h", 443, {"url": "http://git.test/base/"}) == Target(
        "http", "git.test", 80, "203.0.114.7", "/base"
    )
    not_allowed = outbound.git_target("docker1", "other.test", 443, {"token": "t"})
    assert isinstance(not_allowed, Refusal) and not_allowed.status == 403
    assert not_allowed.reason.startswith("egress refused other.test:443: ")
    unresolvable = outbound.git_target("docker1", "nowhere.test", 443, {})
    assert isinstance(unresolvable, Refusal) and unresolvable.status == 502
    private = outbound.git_target("docker1", "inside.test", 443, {})
    assert isinstance(private, Refusal) and private.status == 403


def test_an_unreadable_policy_refuses_every_git_target(outbound: Outbound, tmp_path: Path) -> None:
    (tmp_path / POLICY_DIR / "broken.json").write_text("{not json")
    refused = outbound.git_target("broken", "git.test", 443, {"token": "t"})
    assert isinstance(refused, Refusal) and refused.status == 403 and "unreadable" in refused.reason
    assert not outbound.token_fits_network("broken", None)


def test_a_grant_without_a_policy_reaches_the_first_public_address(tmp_path: Path) -> None:
    answers = {"mixed.test": ["127.0.0.1", "10.0.0.1", "203.0.114.9", "203.0.114.10"]}
    outbound = Outbound(tmp_path, lambda host, _port: answers[host])
    assert outbound.git_target("e2b1", "mixed.test", 443, {"token": "t"}) == Target(
        "https", "mixed.test", 443, "203.0.114.9", ""
    )
    assert outbound.git_target("e2b1", "h", 443, {"url": "https://git.internal.test:8443/x"}) == Target(
        "https", "git.internal.test", 8443, "git.internal.test", "/x"
    )


def test_without_a_policy_git_needs_a_grant_a_usable_url_and_a_public_address(tmp_path: Path) -> None:
    outbound = Outbound(tmp_path, lambda host, _port: ["10.0.0.1", "127.0.0.1"])
    no_grant = outbound.git_target("e2b1", "git.test", 443, {})
    assert isinstance(no_grant, Refusal) and no_grant.status == 403
    assert no_grant.reason.startswith("egress refused git.test:443: ")
    private = outbound.git_target("e2b1", "git.test", 443, {"token": "t"})
    assert private == Refusal(403, "egress refused git.test:443: it has no public address")
    for bad in ("ftp://git.test", "https://", "https://git.test:99999"):
        assert outbound.git_target("e2b1", "git.test", 443, {"url": bad}) == Refusal(
            503, "the git credential for git.test names no usable URL"
        )


def test_a_granted_host_that_does_not_resolve_is_a_502(tmp_path: Path) -> None:
    outbound = Outbound(tmp_path, resolver)
    assert outbound.git_target("e2b1", "unknown.test", 443, {"token": "t"}) == Refusal(
        502, "cannot resolve unknown.test"
    )
