"""Leases of calls in flight, on every store: an append made with ``unleased_at`` (an eviction for
capacity) is refused while a lease on its sandbox is valid then, and writes nothing.

Part of the contract suite: the in-memory double runs it too. The property test drives random
sequences of takes, renewals, releases and guarded appends against a model of the rule.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.events.records import ConcurrencyError, SandboxLeased
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import InMemoryEventStore
from tests.support.fixtures.store import real_db_url
from tests.support.store_helpers import T0, event, projection, row

S = timedelta(seconds=1)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    s = open_store(real_db_url(request.param, request))
    yield s
    s.close()


def test_a_guarded_append_is_refused_while_a_lease_is_valid_and_writes_nothing(store: EventStore) -> None:
    store.append("s1", 0, [event()], projection=projection(row("s1", state="idle")))
    store.take_lease("l1", "s1", "host:1", T0, T0 + 30 * S)

    with pytest.raises(SandboxLeased, match="1 call") as info:
        store.append(
            "s1",
            1,
            [event()],
            projection=projection(row("s1", state="suspending", version=2)),
            unleased_at=T0,
        )
    assert info.value.stream_id == "s1" and info.value.leases == 1
    assert len(store.read_stream("s1")) == 1
    got = store.get_sandbox("s1")
    assert got is not None and got.state == "idle"
    # An append without the guard (a turn, a user's suspend) is not the lease's business.
    store.append("s1", 1, [event()])
    # Another sandbox's lease is not this one's.
    store.append("s2", 0, [event()], unleased_at=T0)

    store.release_lease("l1")
    store.append("s1", 2, [event()], unleased_at=T0)
    assert len(store.read_stream("s1")) == 3


def test_a_lease_is_valid_until_its_expiry_excluded(store: EventStore) -> None:
    store.take_lease("l1", "s1", "host:1", T0, T0 + 30 * S)
    with pytest.raises(SandboxLeased):
        store.append("s1", 0, [event()], unleased_at=T0 + 30 * S - timedelta(microseconds=1))
    assert store.leased_sandboxes(T0 + 29 * S) == {"s1"}
    assert store.leased_sandboxes(T0 + 30 * S) == set()
    store.append("s1", 0, [event()], unleased_at=T0 + 30 * S)


def test_renewing_moves_the_expiry_and_a_missing_lease_says_so(store: EventStore) -> None:
    store.take_lease("l1", "s1", "host:1", T0, T0 + 30 * S)
    assert store.renew_lease("l1", T0 + 90 * S) is True
    assert store.leased_sandboxes(T0 + 60 * S) == {"s1"}
    store.release_lease("l1")
    store.release_lease("l1")  # gone already: success
    assert store.renew_lease("l1", T0 + 90 * S) is False
    assert store.leased_sandboxes(T0) == set()


def test_taking_a_lease_drops_the_expired_ones(store: EventStore) -> None:
    store.take_lease("dead", "s1", "crashed:1", T0, T0 + 30 * S)
    store.take_lease("alive", "s2", "host:2", T0, T0 + 90 * S)
    store.take_lease("new", "s3", "host:3", T0 + 60 * S, T0 + 90 * S)
    # The crashed holder's lease is gone (nothing left to renew); the valid one was kept.
    assert store.renew_lease("dead", T0 + 120 * S) is False
    assert store.renew_lease("alive", T0 + 120 * S) is True
    assert store.leased_sandboxes(T0 + 60 * S) == {"s2", "s3"}


def test_leases_and_guarded_appends_from_threads_never_overlap(store: EventStore) -> None:
    """The serialisation the service relies on: each holder takes its lease, then reads the stream; an
    evictor appends "suspend" with the guard. A holder whose read found no suspend must never see one
    appended while it holds its lease."""
    store.append("s1", 0, [event()])
    broken: list[str] = []
    stop = threading.Event()
    clock = itertools.count()

    def holder(n: int) -> None:
        for i in range(30):
            lid = f"h{n}-{i}"
            store.take_lease(lid, "s1", "t", T0, T0 + 3600 * S)
            before = len(store.read_stream("s1"))
            after = len(store.read_stream("s1"))
            store.release_lease(lid)
            if after != before:
                broken.append(f"{lid}: the stream moved from {before} to {after} under the lease")

    def evictor() -> None:
        while not stop.is_set():
            version = len(store.read_stream("s1"))
            try:
                store.append("s1", version, [event(n=next(clock))], unleased_at=T0)
            except (SandboxLeased, ConcurrencyError):
                continue

    threads = [threading.Thread(target=holder, args=(n,)) for n in range(3)]
    ev = threading.Thread(target=evictor)
    ev.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    ev.join(60)
    assert broken == []


_EXAMPLE = itertools.count()
_op = st.one_of(
    st.tuples(st.just("take"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 100), st.integers(1, 60)),
    st.tuples(st.just("renew"), st.integers(0, 2), st.integers(0, 160)),
    st.tuples(st.just("release"), st.integers(0, 2)),
    st.tuples(st.just("check"), st.integers(0, 1), st.integers(0, 160)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=25))
def test_the_guard_refuses_exactly_when_a_lease_is_valid(
    store: EventStore, ops: list[tuple[int | str, ...]]
) -> None:
    # Each example on its own sandboxes and lease ids, and later in time than every example before it,
    # so a purge by one (expired leases only) never reaches into a later one.
    tag, base = uuid.uuid4().hex[:8], T0 + timedelta(days=next(_EXAMPLE))
    sids = [f"{tag}-s{i}" for i in range(2)]
    model: dict[str, tuple[str, int]] = {}  # lease id -> (sandbox id, expiry second)
    versions = dict.fromkeys(sids, 0)
    for op in ops:
        match op:
            case ("take", int(lid), int(s), int(now), int(ttl)):
                lease = f"{tag}-l{lid}"
                if lease in model:
                    continue
                model = {k: v for k, v in model.items() if v[1] > now}
                store.take_lease(lease, sids[s], "h", base + now * S, base + (now + ttl) * S)
                model[lease] = (sids[s], now + ttl)
            case ("renew", int(lid), int(until)):
                lease = f"{tag}-l{lid}"
                assert store.renew_lease(lease, base + until * S) is (lease in model)
                if lease in model:
                    model[lease] = (model[lease][0], until)
            case ("release", int(lid)):
                store.release_lease(f"{tag}-l{lid}")
                model.pop(f"{tag}-l{lid}", None)
            case ("check", int(s), int(at)):
                sid = sids[s]
                valid = any(v[0] == sid and v[1] > at for v in model.values())
                assert (sid in store.leased_sandboxes(base + at * S)) is valid
                try:
                    store.append(sid, versions[sid], [event()], unleased_at=base + at * S)
                except SandboxLeased:
                    assert valid
                else:
                    assert not valid
                    versions[sid] += 1
