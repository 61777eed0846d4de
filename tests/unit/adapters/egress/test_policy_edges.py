"""The egress policy at its edges (issue 20: gaps targeted mutation testing found), without Docker."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox_lifecycle.adapters.egress.policy import (
    PolicyBook,
    load_policy,
    policy_document,
    system_resolver,
    write_policy,
)


def _no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host}:{port} must be decided without resolving it")


def test_a_pinned_host_port_that_no_rule_allows_is_still_refused() -> None:
    # A pin says where a name is, not that a sandbox may go there: the allow-list decides first.
    rules = load_policy(
        policy_document("s1", "data-app", "10.0.0.0/28", ["ok.test"], ["pinned.test:9000:10.9.9.9"], "V")
    )
    refused = rules.decide("pinned.test", 9000, _no_resolver)
    assert refused.status == 403 and refused.address is None
    # The same pin on an allowed port is followed.
    allowed = load_policy(
        policy_document(
            "s1", "data-app", "10.0.0.0/28", ["pinned.test:9000"], ["pinned.test:9000:10.9.9.9"], "V"
        )
    )
    assert allowed.decide("pinned.test", 9000, _no_resolver).address == "10.9.9.9"


def test_two_policy_files_claiming_one_subnet_the_newer_wins(tmp_path: Path) -> None:
    # A subnet freed by a destroyed sandbox can be handed to a new one before the stale file is removed.
    old = write_policy(str(tmp_path), policy_document("old", "data-app", "10.1.0.0/28", [], [], "V"))
    new = write_policy(str(tmp_path), policy_document("new", "ai-writeback", "10.1.0.0/28", [], [], "V"))
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    found = PolicyBook(str(tmp_path)).for_source("10.1.0.3")
    assert found is not None and found.sandbox_id == "new"
    # Whichever file the directory lists first: make the stale one the newer and it wins instead.
    os.utime(old, (3_000_000, 3_000_000))
    found = PolicyBook(str(tmp_path)).for_source("10.1.0.3")
    assert found is not None and found.sandbox_id == "old"


def test_an_address_outside_every_subnet_has_no_policy(tmp_path: Path) -> None:
    write_policy(str(tmp_path), policy_document("s1", "data-app", "10.1.0.0/28", [], [], "V"))
    book = PolicyBook(str(tmp_path))
    assert book.for_source("10.1.0.16") is None
    assert book.for_source("::ffff:10.1.0.2") is not None  # an IPv4-mapped source is its IPv4 address


def test_an_allowed_decision_is_a_200_to_the_checked_address() -> None:
    rules = load_policy(policy_document("s1", "data-app", "10.0.0.0/28", ["ok.test"], [], "V"))
    allowed = rules.decide("ok.test", 443, lambda host, port: ["1.1.1.1"])
    assert (allowed.status, allowed.address, allowed.reason) == (200, "1.1.1.1", "")


def test_the_system_resolver_returns_the_addresses_of_a_name() -> None:
    # localhost resolves from /etc/hosts: no query leaves the machine.
    assert "127.0.0.1" in system_resolver("localhost", 80)
