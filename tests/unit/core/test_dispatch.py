"""Every dispatch on a closed set of names in core/ covers the whole set: a state, a timer kind or a
failure added later fails here (or in mypy, for the Literal ones) instead of taking another's branch."""

from __future__ import annotations

from typing import get_args

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.kernel import DRIVERS
from sandbox_lifecycle.core.projection import TIMER_KINDS, TimerKind, timer_kind
from sandbox_lifecycle.core.sandbox import FAILED_EVENTS


def test_every_transitional_state_has_a_driver() -> None:
    assert set(DRIVERS) == set(lc.TRANSITIONAL)


def test_every_state_a_failure_leaves_has_its_failure_event() -> None:
    sources = {
        source
        for row in lc.TRANSITIONS
        if row["trigger"] == "mark_failed"
        for source in ([row["source"]] if isinstance(row["source"], str) else row["source"])
    }
    assert set(FAILED_EVENTS) == sources


def test_a_timer_kind_is_checked_when_read() -> None:
    assert (
        set(TIMER_KINDS)
        == set(get_args(TimerKind))
        == {
            "idle",
            "retention",
            "lease",
            "checkpoint",
            "max_lifetime",
            "warning",
        }
    )
    for kind in TIMER_KINDS:
        assert timer_kind(kind) == kind
    with pytest.raises(ValueError, match="unknown timer kind"):
        timer_kind("nap")  # a kind this release does not know never fires as retention
