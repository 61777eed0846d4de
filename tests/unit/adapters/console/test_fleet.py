"""The fleet's page of the read model: filters, server-side pages that never overlap, the counts
against the capacity limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.console.fleet import (
    DEFAULT_PAGE,
    MAX_PAGE,
    FleetQuery,
    bounded_int,
    counts,
    fleet_page,
)
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.events import migrate
from sandbox_lifecycle.events.records import SandboxRow
from sandbox_lifecycle.events.store import open_store
from tests.support.store_helpers import T0, projection, row

STATES = ["idle", "running", "suspended", "expired", "destroying", "creating"]


def _rows() -> list[SandboxRow]:
    out = []
    for i in range(75):
        r = row(
            f"sbx-{i:03d}",
            conversation_id=f"conv-{i % 10}/{i}",
            kind="data-app" if i % 3 else "ai-writeback",
            state=STATES[i % len(STATES)],
        )
        r = replace(r, last_activity_at=T0 + timedelta(minutes=i), provider="docker" if i % 2 else "e2b")
        if r.state == "destroying" and i % 4 == 0:
            r = replace(r, provider_ref=None)  # a destroy of a suspended sandbox holds no compute
        out.append(r)
    out.append(replace(row("odd_%-id", conversation_id="c%_x"), last_activity_at=None))
    out.append(replace(row("back\\slash", state="expired"), last_activity_at=None))
    return out


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    migrate.upgrade(url)
    store = open_store(url)
    store.replace_all_projections([projection(r) for r in _rows()])
    return store.engine


def page(engine: sa.Engine, **params: str) -> list[str]:
    view = fleet_page(engine, FleetQuery.parse(params), Capacity(), lambda sid: 0)
    return [r.id for r in view.rows]


def test_pages_cover_the_fleet_once_newest_activity_first(engine: sa.Engine) -> None:
    seen: list[str] = []
    for n in range(1, 5):
        seen += page(engine, page=str(n), size="20")
    assert len(seen) == 77 == len(set(seen))
    # No activity: its creation time counts (T0, the oldest), then id breaks the tie.
    assert seen[:3] == ["sbx-074", "sbx-073", "sbx-072"]
    assert seen[-3:] == ["back\\slash", "odd_%-id", "sbx-000"]
    assert page(engine, page="5", size="20") == []


def test_the_page_knows_how_many_match_and_how_many_pages(engine: sa.Engine) -> None:
    view = fleet_page(engine, FleetQuery.parse({"state": "idle", "size": "5"}), Capacity(), lambda s: 7)
    assert view.matching == 13 and view.pages == 3
    assert {r.state for r in view.rows} == {"idle"}
    assert view.checkpoints == {r.id: 7 for r in view.rows}
    empty = fleet_page(engine, FleetQuery.parse({"state": "resuming"}), Capacity(), lambda s: 0)
    assert empty.matching == 0 and empty.pages == 1


def test_filters_combine_and_match_exactly_or_by_prefix(engine: sa.Engine) -> None:
    ids = page(engine, kind="ai-writeback", provider="e2b", size="200")
    assert ids and all(int(i[4:]) % 3 == 0 and int(i[4:]) % 2 == 0 for i in ids)
    assert len(ids) == 13
    assert sorted(page(engine, conversation="conv-3/", size="200")) == [
        f"sbx-{i:03d}" for i in range(3, 75, 10)
    ]
    assert page(engine, id="sbx-07", size="200") == [f"sbx-{i:03d}" for i in range(74, 69, -1)]
    assert page(engine, state="idl") == []  # exact, not prefix


def test_wildcards_in_a_prefix_filter_are_literal(engine: sa.Engine) -> None:
    assert page(engine, id="%") == []
    assert page(engine, id="_") == []
    assert page(engine, id="odd_%") == ["odd_%-id"]
    assert page(engine, conversation="c%_") == ["odd_%-id"]
    assert page(engine, id="odd\\") == []
    assert page(engine, id="back\\") == ["back\\slash"]


def test_counts_follow_holds_compute_and_group_by_kind(engine: sa.Engine) -> None:
    c = counts(engine)
    assert c.total == 77
    assert c.by_state["idle"] == 13 and c.by_state["running"] == 13 + 1
    rows = _rows()
    live = [
        r
        for r in rows
        if r.state in {"creating", "idle", "running"} or (r.state == "destroying" and r.provider_ref)
    ]
    assert c.live == len(live)
    assert c.live_by_kind == {k: sum(r.kind == k for r in live) for k in ("data-app", "ai-writeback")}
    assert c.suspended == 13 == sum(r.state == "suspended" for r in rows)
    assert c.suspended_by_kind == {"data-app": 13}
    assert c.kinds == ("ai-writeback", "data-app") and c.providers == ("docker", "e2b")


def test_an_empty_fleet_counts_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    migrate.upgrade(url)
    c = counts(open_store(url).engine)
    assert (c.total, c.live, c.suspended, c.by_state, c.live_by_kind, c.suspended_by_kind) == (
        0,
        0,
        0,
        {},
        {},
        {},
    )


def test_the_query_is_parsed_bounded() -> None:
    q = FleetQuery.parse({"state": " idle ", "kind": "", "bogus": "x", "page": "0", "size": "100000"})
    assert q.filters == {"state": "idle"} and q.page == 1 and q.size == MAX_PAGE
    q = FleetQuery.parse({"page": "3", "size": "10"})
    assert q.offset == 20
    assert FleetQuery.parse({"size": "ten"}).size == DEFAULT_PAGE
    assert FleetQuery.parse({}).offset == 0


@given(st.one_of(st.none(), st.text(max_size=12), st.integers().map(str)))
def test_bounded_int_stays_in_bounds(raw: str | None) -> None:
    value = bounded_int(raw, 5, 1, 100)
    assert 1 <= value <= 100
    try:
        parsed = int(raw) if raw is not None else None
    except ValueError:
        parsed = None  # not a number to int(): the default, which the bounds above already checked
    if parsed is not None and 1 <= parsed <= 100:
        assert value == parsed
