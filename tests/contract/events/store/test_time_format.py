"""Stored times compare with bound times exactly, on SQLite too.

SQLite has no timestamp type: times are text, compared as text. Every time the store writes must have
the exact text form a bound parameter has, or "due at exactly now" falls between ``<`` and ``<=``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sandbox_lifecycle.events.store import SqlEventStore
from sandbox_lifecycle.events.tables import events, sandbox_deadlines, sandboxes
from tests.support.store_helpers import T0, event, projection, row

US = timedelta(microseconds=1)
# A whole second (the form a text writer may shorten) and one with microseconds.
MOMENTS = [T0, T0 + timedelta(seconds=1, microseconds=250)]


@pytest.mark.parametrize("now", MOMENTS, ids=["whole-second", "microseconds"])
def test_a_deadline_due_at_exactly_now_is_due_and_one_a_microsecond_later_is_not(
    store: SqlEventStore, now: object
) -> None:
    assert isinstance(now, type(T0))
    store.append("at", 0, [event()], projection=projection(row("at"), ("idle", now)))
    store.append("later", 0, [event()], projection=projection(row("later"), ("idle", now + US)))

    assert [d.sandbox_id for d in store.due_deadlines(now)] == ["at"]
    assert [d.sandbox_id for d in store.due_deadlines(now - US)] == []
    assert [d.sandbox_id for d in store.due_deadlines(now + US)] == ["at", "later"]


@pytest.mark.parametrize("now", MOMENTS, ids=["whole-second", "microseconds"])
def test_written_times_equal_the_same_time_bound_as_a_parameter(
    store: SqlEventStore, db_url: str, now: object
) -> None:
    """Equal, not merely ordered: ``due_at < now`` must not hold for a deadline due at now."""
    assert isinstance(now, type(T0))
    r = replace(row("s"), last_activity_at=now, state_since=now, created_at=now)
    store.append("s", 0, [event(at=now)], projection=projection(r, ("idle", now)))

    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for column in (
                events.c.occurred_at,
                sandbox_deadlines.c.due_at,
                sandboxes.c.last_activity_at,
                sandboxes.c.state_since,
                sandboxes.c.created_at,
            ):
                at = sa.bindparam("at", now, type_=column.type)
                count = sa.select(sa.func.count()).select_from(column.table)
                assert conn.execute(count.where(column == at)).scalar() == 1, column
                assert conn.execute(count.where(column < at)).scalar() == 0, column
    finally:
        engine.dispose()
