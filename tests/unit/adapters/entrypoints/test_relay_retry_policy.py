"""A webhook retry policy's bounds, each exactly at its edge (adapters.entrypoints.relay.RetryPolicy).

Pins a behaviour a one-line mutant of relay.py changed unnoticed (docs/testing.md)."""

from __future__ import annotations

import pytest

from sandbox_lifecycle.adapters.entrypoints.relay import RetryPolicy


@pytest.mark.parametrize("bad", [{"max_retry": 0}, {"timeout": 0}, {"first_retry": -0.001}, {"attempts": 0}])
def test_a_zero_cap_or_timeout_or_a_negative_pause_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def test_the_smallest_valid_policy_is_accepted() -> None:
    policy = RetryPolicy(attempts=1, first_retry=0, max_retry=0.001, timeout=0.001)
    assert (policy.attempts, policy.first_retry) == (1, 0)
