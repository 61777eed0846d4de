"""Fresh pools (issue R section 4): a claim never takes a sandbox made from an image the kind no longer
uses, and maintain replaces it (reason ``stale_image``); on the fake provider in memory."""

from __future__ import annotations

from datetime import timedelta

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import Clock, FakeProvider, InMemoryEventStore

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


class VersionedProvider(FakeProvider):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, str | None] = {"data-app": "sha256:one"}

    def image_version(self, kind: str) -> str | None:
        return self.images.get(kind)


def make(provider: FakeProvider, size: int = 2) -> SandboxService:
    return SandboxService(
        InMemoryEventStore(),
        provider,
        policy=POLICY,
        clock=Clock(),
        capacity=Capacity(warm_pool={"data-app": size}),
    )


def pooled(service: SandboxService) -> list[str]:
    return sorted(r.id for r in service.list(lc.IDLE) if r.conversation_id is None)


def test_the_pooled_event_records_the_image_version_read_before_the_create() -> None:
    provider = VersionedProvider()
    service = make(provider, size=1)
    service.maintain_pools()
    (sid,) = pooled(service)
    (joined,) = [e for e in service.history(sid) if e.type == "Pooled"]
    assert joined.data["image"] == "sha256:one"


def test_a_claim_never_takes_a_stale_sandbox_and_maintain_replaces_it() -> None:
    provider = VersionedProvider()
    service = make(provider)
    service.maintain_pools()
    stale = pooled(service)
    assert len(stale) == 2
    provider.images["data-app"] = "sha256:two"
    with service.turn("conv-a", "data-app") as sbx:
        claimed = sbx.id
    service.pools.settle()
    assert claimed not in stale
    report = service.maintain_pools()
    for sid in stale:
        row = service.get(sid)
        assert row.state in (lc.EXPIRED, lc.DESTROYING) and row.expired_reason == "stale_image", report
        destroy = [e for e in service.history(sid) if e.type == "DestroyRequested"]
        assert destroy[0].reason == "stale_image" and destroy[0].actor == "warm_pool"
    fresh = pooled(service)
    assert len(fresh) == 2 and not set(fresh) & set(stale)
    for sid in fresh:
        (joined,) = [e for e in service.history(sid) if e.type == "Pooled"]
        assert joined.data["image"] == "sha256:two"
    # Fresh ones are claimed as ever.
    with service.turn("conv-b", "data-app") as sbx:
        assert sbx.id in fresh


def test_a_fresh_pool_is_left_alone() -> None:
    provider = VersionedProvider()
    service = make(provider)
    service.maintain_pools()
    before = pooled(service)
    assert service.maintain_pools() == []
    with service.turn("conv-a", "data-app") as sbx:
        assert sbx.id in before


def test_an_unrecorded_version_is_stale_once_the_provider_names_one() -> None:
    provider = VersionedProvider()
    provider.images["data-app"] = None  # cannot say: nothing is compared, nothing is stale
    service = make(provider, size=1)
    service.maintain_pools()
    (old,) = pooled(service)
    assert service.maintain_pools() == []
    provider.images["data-app"] = "sha256:one"
    report = service.maintain_pools()
    assert any(old in line and "stale image" in line for line in report)
    assert service.get(old).expired_reason == "stale_image"


def test_a_provider_that_cannot_name_versions_keeps_its_pool() -> None:
    service = make(FakeProvider(), size=1)
    service.maintain_pools()
    (sid,) = pooled(service)
    assert service.maintain_pools() == []
    with service.turn("conv-a", "data-app") as sbx:
        assert sbx.id == sid
