"""The capacity settings: parsed once, every bad one named in one ConfigError; the CLI's exit code."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.entrypoints.cli import commands as cli
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import CapacityExceeded, ConfigError


def test_unset_means_no_limit_and_no_pool() -> None:
    capacity = Settings.from_env({}).capacity
    assert capacity == Capacity(wait=timedelta(seconds=30))
    assert not capacity.bounded and capacity.limits("data-app") == ()


def test_limits_wait_and_pools_are_read() -> None:
    capacity = Settings.from_env(
        {
            "SANDBOX_MAX_LIVE": "3",
            "SANDBOX_MAX_LIVE_AI_WRITEBACK": "1",
            "SANDBOX_CAPACITY_WAIT_MS": "0",
            "SANDBOX_WARM_POOL_DATA_APP": "2",
            "SANDBOX_WARM_POOL_AI_WRITEBACK": "0",
        }
    ).capacity
    assert capacity.max_live == 3 and dict(capacity.max_live_per_kind) == {"ai-writeback": 1}
    assert capacity.wait == timedelta(0)
    assert dict(capacity.warm_pool) == {"data-app": 2}
    assert [(limit.limit, limit.kind) for limit in capacity.limits("ai-writeback")] == [
        (3, None),
        (1, "ai-writeback"),
    ]
    assert [(limit.limit, limit.kind) for limit in capacity.limits("data-app")] == [(3, None)]


def test_every_bad_capacity_setting_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(
            {
                "SANDBOX_MAX_LIVE": "0",
                "SANDBOX_MAX_LIVE_DATA_APP": "many",
                "SANDBOX_CAPACITY_WAIT_MS": "-1",
                "SANDBOX_WARM_POOL_DATA_APP": "1.5",
            }
        )
    for name in (
        "SANDBOX_MAX_LIVE ",
        "SANDBOX_MAX_LIVE_DATA_APP",
        "SANDBOX_CAPACITY_WAIT_MS",
        "SANDBOX_WARM_POOL_DATA_APP",
    ):
        assert name in str(info.value)


def test_capacity_exceeded_has_its_own_exit_code() -> None:
    codes = dict(cli._EXIT_CODES)
    assert cli.EXIT_CAPACITY == 75 and codes[CapacityExceeded] == 75
    # No other error shares it (the not-found family shares 4: a sandbox or a process of it).
    assert [kind for kind, code in codes.items() if code == 75] == [CapacityExceeded]
    # Matched before the catch-all.
    error = CapacityExceeded("data-app", 3, None, 1.0)
    assert next(code for kind, code in cli._EXIT_CODES if isinstance(error, kind)) == 75
