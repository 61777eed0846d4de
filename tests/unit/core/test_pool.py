"""The warm pool's edges (issue 20: gaps targeted mutation testing found), on the fake provider in memory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.errors import ConcurrencyError
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def make(clock: Clock, **capacity: object) -> SandboxService:
    return SandboxService(
        InMemoryEventStore(),
        FakeProvider(),
        policy=POLICY,
        clock=clock,
        capacity=Capacity(**capacity),  # type: ignore[arg-type]
    )


def test_an_idle_sandbox_that_never_joined_the_pool_is_neither_claimed_nor_drained() -> None:
    clock = Clock()
    service = make(clock, warm_pool={"data-app": 1})
    # Idle, of the pool's kind, with no conversation: it looks like a pooled one from its row alone.
    outsider = service.create("data-app", None).id
    assert service.get(outsider).state == lc.IDLE
    report = service.maintain_pools()
    assert [line for line in report if "joined" in line] and outsider not in "".join(report)
    with service.turn("conv-a", "data-app") as sbx:
        claimed = sbx.id
    service.pools.settle()
    assert claimed != outsider and service.get(claimed).conversation_id == "conv-a"

    service.capacity = Capacity(warm_pool={"data-app": 0})
    drained = service.maintain_pools()
    assert drained and not [line for line in drained if outsider in line]
    assert service.get(outsider).state == lc.IDLE


def test_a_pool_of_size_zero_is_never_claimed_from() -> None:
    clock = Clock()
    service = make(clock, warm_pool={"data-app": 1})
    service.maintain_pools()
    (pooled,) = [r.id for r in service.list(lc.IDLE)]
    service.capacity = Capacity(warm_pool={"data-app": 0})
    with service.turn("conv-a", "data-app") as sbx:
        assert sbx.id != pooled
    assert service.get(pooled).conversation_id is None


def test_a_pooled_sandbox_is_recycled_only_after_a_whole_idle_timeout() -> None:
    clock = Clock()
    service = make(clock, warm_pool={"data-app": 1})
    service.maintain_pools()
    (pooled,) = [r.id for r in service.list(lc.IDLE)]
    clock.advance(minutes=30)  # exactly the idle timeout: still fresh
    assert service.maintain_pools() == []
    assert service.get(pooled).state == lc.IDLE
    clock.advance(seconds=1)
    assert any(f"{pooled}: recycled" in line for line in service.maintain_pools())
    assert service.get(pooled).expired_reason == "pool_recycled"


def test_a_pool_keeps_its_size_and_drains_only_the_excess() -> None:
    clock = Clock()
    service = make(clock, warm_pool={"data-app": 3})
    assert len(service.maintain_pools()) == 3
    assert service.maintain_pools() == []  # full: nothing to add or drain
    service.capacity = Capacity(warm_pool={"data-app": 1})
    drained = service.maintain_pools()
    assert len(drained) == 2 and all("drained from the data-app pool" in line for line in drained)
    assert len([r for r in service.list(lc.IDLE) if r.conversation_id is None]) == 1


def test_a_kind_without_a_pool_gets_no_pooled_sandbox() -> None:
    clock = Clock()
    service = make(clock, warm_pool={"data-app": 1})
    # An idle ai-writeback sandbox with no conversation makes maintain() look at that kind too.
    stray = service.create("ai-writeback", None).id
    report = service.maintain_pools()
    assert len(report) == 1 and "joined the data-app pool" in report[0]
    assert [r.id for r in service.list(lc.IDLE) if r.kind == "ai-writeback"] == [stray]


def test_a_claim_that_loses_the_race_for_one_pooled_sandbox_takes_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    service = make(clock, warm_pool={"data-app": 2})
    service.maintain_pools()
    pooled = {r.id for r in service.list(lc.IDLE)}
    apply = service.kernel.apply
    lost: list[str] = []

    def first_claim_loses(state: sb.Sandbox, command: sb.Command, **kw: Any) -> Any:
        # As if another turn had claimed the first pooled sandbox between listing and claiming.
        if isinstance(command, sb.Claim) and not lost:
            lost.append(state.id)
            raise ConcurrencyError(state.id, state.version, "claimed by another turn")
        return apply(state, command, **kw)

    monkeypatch.setattr(service.kernel, "apply", first_claim_loses)
    with service.turn("conv-a", "data-app") as sbx:
        claimed = sbx.id
    service.pools.settle()
    assert lost and claimed in pooled and claimed != lost[0]


def test_a_kind_dropped_from_the_pool_settings_has_its_pool_drained() -> None:
    clock = Clock()
    service = make(clock, warm_pool={"ai-writeback": 1})
    service.maintain_pools()
    (pooled,) = [r.id for r in service.list(lc.IDLE)]
    # SANDBOX_WARM_POOL_AI_WRITEBACK unset on the next start: the kind is absent, not zero.
    service.capacity = Capacity(warm_pool={})
    assert service.maintain_pools() == [f"{pooled}: drained from the ai-writeback pool"]
    assert service.get(pooled).expired_reason == "pool_drained"
