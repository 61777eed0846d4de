"""Relay checkpoints live in the event store's database (migration 0003), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from sandbox_lifecycle.events.checkpoints import Checkpoints
from sandbox_lifecycle.events.store import SqlEventStore


def test_a_checkpoint_starts_at_the_beginning_and_keeps_the_last_saved_position(
    store: SqlEventStore, db_url: str
) -> None:
    checkpoints = Checkpoints(store.engine)
    assert checkpoints.load("hook") == 0
    checkpoints.save("hook", 41)
    checkpoints.save("hook", 42)
    checkpoints.save("other", 7)
    assert (checkpoints.load("hook"), checkpoints.load("other")) == (42, 7)
    # Another connection pool (a restarted relay) reads what this one saved.
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        assert Checkpoints(engine).load("hook") == 42
    finally:
        engine.dispose()
