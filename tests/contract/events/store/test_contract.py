"""The EventStore contract, run against SQLite, PostgreSQL and the in-memory fake alike.

The fake drives the service suite; running it here too (eventsourcing's test_popo.py idea) keeps it
from drifting away from the real stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sandbox_lifecycle.core.audit import verify_chains
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.events.chain import event_hash, log_link
from sandbox_lifecycle.events.records import ConcurrencyError, Deadline, NewEvent, Projection, StoreError
from sandbox_lifecycle.events.store import open_store
from sandbox_lifecycle.events.store.sqlite import SqliteEventStore
from tests.support.fakes import InMemoryEventStore
from tests.support.fixtures.store import real_db_url
from tests.support.store_helpers import T0, event, projection, row


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """Overrides the conftest's store: the contract holds for the fake as well."""
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    s = open_store(real_db_url(request.param, request))
    yield s
    s.close()


def test_append_then_read_stream_returns_the_events_in_version_order(store: EventStore) -> None:
    first = store.append("s1", 0, [event("Created", 1)])
    second = store.append("s1", 1, [event("Touched", 2), event("Suspended", 3)])

    assert (first.version, second.version) == (1, 3)
    assert not first.duplicate and not second.duplicate
    stream = store.read_stream("s1")
    assert [(e.version, e.type, e.data["n"]) for e in stream] == [
        (1, "Created", 1),
        (2, "Touched", 2),
        (3, "Suspended", 3),
    ]
    assert stream[0].data == {"n": 1, "nested": {"list": [1, "two"]}}
    assert stream[0].metadata == {"actor": "t"}
    assert stream[0].schema_version == 1
    assert {e.stream_id for e in stream} == {"s1"}
    assert [e.position for e in stream] == sorted({e.position for e in stream})
    assert first.last_position == stream[0].position
    assert second.last_position == stream[2].position
    assert [e.version for e in store.read_stream("s1", after_version=1)] == [2, 3]


def test_schema_version_and_metadata_are_stored(store: EventStore) -> None:
    e = NewEvent("Created", {}, T0, schema_version=3, metadata={"reason": "because", "causation_id": "c-1"})
    store.append("s1", 0, [e])
    (recorded,) = store.read_stream("s1")
    assert (recorded.schema_version, recorded.metadata, recorded.data) == (3, e.metadata, {})


def test_unknown_stream_and_empty_store_read_empty(store: EventStore) -> None:
    assert store.read_stream("nope") == []
    assert store.read_all() == []
    assert store.get_sandbox("nope") is None
    assert store.find_live("conv", "data-app") is None
    assert store.list_sandboxes() == []
    assert store.due_deadlines(T0) == []
    assert store.next_deadline() is None
    assert store.all_deadlines() == []
    assert store.stream_ids() == []


def test_stale_expected_version_is_refused_and_writes_nothing(store: EventStore) -> None:
    store.append("s1", 0, [event(n=1)])

    with pytest.raises(ConcurrencyError) as info:
        store.append("s1", 0, [event(n=2)])
    assert (info.value.stream_id, info.value.expected_version) == ("s1", 0)
    # Ahead of the stream is as wrong as behind it: it would leave a gap.
    with pytest.raises(ConcurrencyError):
        store.append("s1", 5, [event(n=3)])
    with pytest.raises(ConcurrencyError):
        store.append("other", 1, [event(n=4)])

    assert [e.data["n"] for e in store.read_all()] == [1]


def test_bad_arguments_are_refused_before_touching_the_database(store: EventStore) -> None:
    with pytest.raises(ValueError, match="at least one"):
        store.append("s1", 0, [])
    with pytest.raises(ValueError, match="expected_version"):
        store.append("s1", -1, [event()])
    with pytest.raises(ValueError, match="naive"):
        store.append("s1", 0, [NewEvent("Created", {}, datetime(2025, 1, 1))])
    assert store.read_all() == []


def test_retried_append_with_the_same_idempotency_key_is_a_duplicate_not_a_copy(store: EventStore) -> None:
    batch = [event("Created", 1), event("Started", 2)]
    first = store.append("s1", 0, batch, idempotency_key="req-1")
    retry = store.append("s1", 0, batch, idempotency_key="req-1")

    assert retry.duplicate
    assert (
        (retry.version, retry.last_position)
        == (first.version, first.last_position)
        == (2, first.last_position)
    )
    assert len(store.read_stream("s1")) == 2

    # The stream moved on; a late retry of the first append is still recognised.
    store.append("s1", 2, [event("Touched", 3)])
    assert store.append("s1", 0, batch, idempotency_key="req-1").version == 2
    assert len(store.read_stream("s1")) == 3

    # Keys are per stream, and a new key on the same stream appends normally.
    assert not store.append("s2", 0, [event()], idempotency_key="req-1").duplicate
    assert not store.append("s1", 3, [event()], idempotency_key="req-2").duplicate
    assert len(store.read_all()) == 5


def test_projection_is_written_with_the_events(store: EventStore) -> None:
    r = row("s1", conversation_id="c1")
    p = projection(r, ("idle", T0 + timedelta(minutes=30)), ("lease", T0 + timedelta(minutes=5)))
    store.append("s1", 0, [event()], projection=p)

    assert store.get_sandbox("s1") == r
    assert store.find_live("c1", "data-app") == r
    assert store.all_deadlines() == sorted(p.deadlines, key=lambda d: d.due_at)


def test_failed_append_writes_no_projection(store: EventStore) -> None:
    r1 = row("s1", conversation_id="c1")
    store.append("s1", 0, [event()], projection=projection(r1, ("idle", T0)))

    r2 = replace(r1, state="suspended", version=2)
    with pytest.raises(ConcurrencyError):
        store.append("s1", 0, [event()], projection=projection(r2, ("retention", T0)))

    assert store.get_sandbox("s1") == r1
    assert [(d.kind, d.version) for d in store.all_deadlines()] == [("idle", 1)]
    assert len(store.read_stream("s1")) == 1


def test_second_live_sandbox_of_a_conversation_and_kind_loses(store: EventStore) -> None:
    store.append("s1", 0, [event()], projection=projection(row("s1", conversation_id="c1")))

    with pytest.raises(ConcurrencyError, match="c1") as info:
        store.append("s2", 0, [event()], projection=projection(row("s2", conversation_id="c1"), ("idle", T0)))
    assert info.value.stream_id == "s2"
    # The loser's events and deadlines went with it.
    assert store.read_stream("s2") == []
    assert store.get_sandbox("s2") is None
    assert store.all_deadlines() == []

    # Another kind, or no conversation at all, is no conflict.
    store.append(
        "s3", 0, [event()], projection=projection(row("s3", conversation_id="c1", kind="ai-writeback"))
    )
    store.append("s4", 0, [event()], projection=projection(row("s4")))
    store.append("s5", 0, [event()], projection=projection(row("s5")))

    # Once the first one expired, the conversation may have a new one.
    expired = replace(row("s1", conversation_id="c1"), state="expired", version=2)
    store.append("s1", 1, [event("Expired")], projection=projection(expired))
    store.append("s2", 0, [event()], projection=projection(row("s2", conversation_id="c1")))
    live = store.find_live("c1", "data-app")
    assert live is not None and live.id == "s2"


def test_write_projection_rewrites_row_and_deadlines_without_events(store: EventStore) -> None:
    r = row("s1", conversation_id="c1")
    store.append("s1", 0, [event()], projection=projection(r, ("idle", T0)))

    rearmed = projection(r, ("idle", T0 + timedelta(hours=1)))
    store.write_projection(rearmed)
    assert store.all_deadlines() == list(rearmed.deadlines)
    assert len(store.read_all()) == 1

    store.write_projection(projection(row("s2")))
    assert store.get_sandbox("s2") == row("s2")
    with pytest.raises(ConcurrencyError):
        store.write_projection(projection(row("s3", conversation_id="c1")))
    assert store.get_sandbox("s3") is None


def test_deadlines_are_replaced_per_sandbox_and_come_due_oldest_first(store: EventStore) -> None:
    a, b = row("a"), row("b")
    store.append(
        "a", 0, [event()], projection=projection(a, ("idle", T0 + timedelta(minutes=3)), ("lease", T0))
    )
    store.append("b", 0, [event()], projection=projection(b, ("idle", T0 + timedelta(minutes=1))))

    assert store.next_deadline() == T0
    due = store.due_deadlines(T0 + timedelta(minutes=2))
    assert [(d.sandbox_id, d.kind) for d in due] == [("a", "lease"), ("b", "idle")]
    assert [(d.sandbox_id, d.kind) for d in store.due_deadlines(T0 + timedelta(minutes=2), limit=1)] == [
        ("a", "lease")
    ]
    assert store.due_deadlines(T0 - timedelta(seconds=1)) == []
    # A deadline exactly at now is due.
    assert [d.kind for d in store.due_deadlines(T0)] == ["lease"]

    # Replacing a's deadlines drops the lease and moves idle; b's stay untouched.
    a2 = replace(a, version=2)
    store.append("a", 1, [event()], projection=projection(a2, ("idle", T0 + timedelta(minutes=10))))
    assert [(d.sandbox_id, d.kind, d.version) for d in store.all_deadlines()] == [
        ("b", "idle", 1),
        ("a", "idle", 2),
    ]
    assert store.next_deadline() == T0 + timedelta(minutes=1)

    # An empty tuple disarms them all.
    store.append("b", 1, [event()], projection=projection(replace(b, version=2)))
    assert [d.sandbox_id for d in store.all_deadlines()] == ["a"]


def test_deadline_of_another_sandbox_is_refused(store: EventStore) -> None:
    bad = Projection(row("a"), (Deadline("b", "idle", T0, 1),))
    with pytest.raises(ValueError, match="deadline"):
        store.append("a", 0, [event()], projection=bad)


def test_read_all_pages_through_every_stream_in_commit_order(store: EventStore) -> None:
    for i in range(7):
        store.append(f"s{i % 3}", i // 3, [event(n=i)])

    everything = store.read_all()
    assert [e.data["n"] for e in everything] == list(range(7))
    positions = [e.position for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == 7

    pages, after = [], 0
    for _ in range(10):
        page = store.read_all(after_position=after, limit=3)
        if not page:
            break
        pages.append([e.data["n"] for e in page])
        after = page[-1].position
    assert pages == [[0, 1, 2], [3, 4, 5], [6]]
    assert store.stream_ids() == ["s0", "s1", "s2"]


def test_datetimes_round_trip_as_aware_utc(store: EventStore) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2025, 6, 1, 17, 30, 15, 123456, tzinfo=ist)
    store.append(
        "s1",
        0,
        [event(at=local)],
        projection=projection(replace(row("s1"), created_at=local), ("idle", local)),
    )

    (recorded,) = store.read_stream("s1")
    sandbox = store.get_sandbox("s1")
    (deadline,) = store.all_deadlines()
    assert sandbox is not None
    for value in (recorded.occurred_at, sandbox.created_at, deadline.due_at, store.next_deadline()):
        assert value == local
        assert value is not None and value.tzinfo == UTC
    assert recorded.occurred_at.microsecond == 123456
    # Comparisons happen in UTC too: 12:00 UTC is 17:30 in India.
    assert store.due_deadlines(datetime(2025, 6, 1, 12, 0, 15, 123456, tzinfo=UTC)) == [deadline]
    assert store.due_deadlines(datetime(2025, 6, 1, 12, 0, 15, tzinfo=UTC)) == []


def test_list_and_find_sandboxes(store: EventStore) -> None:
    rows = [
        row("a", conversation_id="c1"),
        row("b", conversation_id="c2", state="suspended"),
        row("c", conversation_id="c1", state="expired"),
    ]
    for r in rows:
        store.write_projection(projection(r))

    assert [r.id for r in store.list_sandboxes()] == ["a", "b", "c"]
    assert [r.id for r in store.list_sandboxes("suspended")] == ["b"]
    assert store.list_sandboxes("creating") == []
    assert store.find_live("c1", "data-app") == rows[0]
    assert store.find_live("c1", "ai-writeback") is None
    store.write_projection(projection(replace(rows[0], state="expired", version=2)))
    assert store.find_live("c1", "data-app") is None


def test_replace_all_projections_swaps_the_whole_read_model(store: EventStore) -> None:
    store.write_projection(projection(row("old", conversation_id="c1"), ("idle", T0)))
    new = [
        projection(row(f"n{i:04d}", conversation_id=f"c{i}"), ("idle", T0 + timedelta(seconds=i)))
        for i in range(2500)
    ]

    store.replace_all_projections(p for p in new)

    assert store.get_sandbox("old") is None
    assert len(store.list_sandboxes()) == 2500
    assert store.all_deadlines() == [p.deadlines[0] for p in new]

    # A replacement that breaks the read model's rules leaves the old one in place.
    clash = [projection(row("x", conversation_id="c1")), projection(row("y", conversation_id="c1"))]
    with pytest.raises(StoreError):
        store.replace_all_projections(clash)
    assert len(store.list_sandboxes()) == 2500


def test_missing_schema_is_reported_with_the_fix(empty_db_url: str) -> None:
    store = open_store(empty_db_url)
    try:
        with pytest.raises(StoreError, match="db upgrade"):
            store.read_all()
        with pytest.raises(StoreError):
            store.append("s1", 0, [event()])
    finally:
        store.close()


def test_scratch_store_is_private_and_has_the_schema() -> None:
    one, two = SqliteEventStore.scratch(), SqliteEventStore.scratch()
    try:
        one.append("s1", 0, [event()], projection=projection(row("s1"), ("idle", T0)))
        assert len(one.read_all()) == 1 and one.get_sandbox("s1") == row("s1")
        assert two.read_all() == []
    finally:
        one.close()
        two.close()


def test_aware_non_utc_now_is_accepted_for_due_deadlines(store: EventStore) -> None:
    store.write_projection(projection(row("a"), ("idle", T0)))
    plus_two = datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert len(store.due_deadlines(plus_two)) == 1
    assert store.due_deadlines(plus_two.astimezone(UTC) - timedelta(microseconds=1)) == []


def test_read_chain_gives_every_event_its_chain_hash_in_stream_order(store: EventStore) -> None:
    store.append("b", 0, [event("Created", 1)])
    store.append("a", 0, [event("Created", 2), event("Touched", 3)])
    store.append("b", 1, [event("Touched", 4)])
    chained = store.read_chain()
    assert [(c.event.stream_id, c.event.version) for c in chained] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert chained[0].hash == event_hash(None, chained[0].event)
    assert chained[1].hash == event_hash(chained[0].hash, chained[1].event)
    assert chained[3].hash == event_hash(chained[2].hash, chained[3].event)
    assert [(c.event.stream_id, c.event.version) for c in store.read_chain(("a", 2), limit=1)] == [("b", 1)]
    assert verify_chains(store).ok


def test_read_links_give_the_log_chain_in_position_order_and_the_head_its_end(store: EventStore) -> None:
    assert store.read_links() == [] and store.log_head() == (0, "")
    store.append("b", 0, [event("Created", 1)])
    store.append("a", 0, [event("Created", 2), event("Touched", 3)])
    store.append("b", 1, [event("Touched", 4)])
    links = store.read_links()
    assert [link.position for link in links] == [e.position for e in store.read_all()]
    hashes = {(c.event.position): c.hash for c in store.read_chain()}
    previous = None
    for link in links:
        assert link.hash == hashes[link.position]
        previous = log_link(previous, link.position, link.hash or "")
        assert link.log_hash == previous
    assert store.read_links(links[1].position, limit=1) == [links[2]]
    assert store.log_head() == (links[-1].position, links[-1].log_hash)
    report = verify_chains(store)
    assert report.ok and report.head == store.log_head()


def test_a_refused_append_leaves_the_log_chain_and_head_unmoved(store: EventStore) -> None:
    store.append("a", 0, [event()])
    head = store.log_head()
    with pytest.raises(ConcurrencyError):
        store.append("a", 0, [event(n=2), event(n=3)])
    assert store.log_head() == head
    store.append("b", 0, [event()])
    assert verify_chains(store).ok
