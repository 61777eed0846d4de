"""The log chain's link text, which PostgreSQL computes too (events.chain.log_link).

Pins a behaviour a one-line mutant of events/chain.py changed unnoticed (docs/testing.md)."""

from __future__ import annotations

from hashlib import sha256

from sandbox_lifecycle.events.chain import log_link


def test_a_keyless_event_links_three_fields_and_a_keyed_one_four() -> None:
    def digest(text: str) -> str:
        return sha256(text.encode("utf-8")).hexdigest()

    assert log_link(None, 0, "ab12") == digest(":0:ab12")
    assert log_link("prev", 7, "ab12") == digest("prev:7:ab12")
    assert log_link("prev", 7, "ab12", "key-1") == digest("prev:7:ab12:key-1")
    assert log_link("prev", 7, "ab12", "") == digest("prev:7:ab12:")
    assert log_link("prev", 7, "ab12", "") != log_link("prev", 7, "ab12")
