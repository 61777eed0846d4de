"""Checkpoints of feed consumers (the webhook relay), kept in the event store's database.

A consumer saves the position of the last event it handled after handling it; on restart it reads the
feed from there. A crash between the two repeats one event, never skips one: at-least-once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sandbox_lifecycle.events.records import StoreError
from sandbox_lifecycle.events.tables import relay_checkpoints


class Checkpoints:
    """Named positions in the feed, on the store's engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(relay_checkpoints)
        self._upsert = statement.on_conflict_do_update(
            index_elements=[relay_checkpoints.c.name],
            set_={"position": statement.excluded.position, "updated_at": statement.excluded.updated_at},
        )
        self._select = sa.select(relay_checkpoints.c.position).where(
            relay_checkpoints.c.name == sa.bindparam("name")
        )

    def load(self, name: str) -> int:
        """The saved position of ``name``; 0 (the start of the feed) when it has none."""
        try:
            with self._engine.connect() as conn:
                position = conn.execute(self._select, {"name": name}).scalar()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"reading the checkpoint of {name!r} failed: {exc}") from None
        return int(position or 0)

    def save(self, name: str, position: int) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    self._upsert, {"name": name, "position": position, "updated_at": datetime.now(UTC)}
                )
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"saving the checkpoint of {name!r} failed: {exc}") from None
