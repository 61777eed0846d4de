"""Hash chain: every event carries the hash of its content and of the previous event in its stream.

Adds ``events.hash`` and computes it for the log written before (each stream in version order), so an
existing history becomes verifiable from this revision on: what was edited before it cannot be told,
what is edited after it can.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAGE = 5000


# A frozen copy of events/chain.py's hash: a migration must not change when the code does. A test
# checks that the backfilled log verifies with the current code.
def _hash(previous: str | None, row: Any, data: Any, meta: Any, occurred_at: datetime) -> str:
    content = orjson.dumps(
        (row.stream_id, row.version, row.type, row.schema_version, data, meta, occurred_at),
        option=orjson.OPT_SORT_KEYS,
    )
    return sha256((previous or "").encode("ascii") + content).hexdigest()


def _utc(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite keeps naive UTC text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def upgrade() -> None:
    op.add_column("events", sa.Column("hash", sa.Text(), nullable=True))
    conn = op.get_bind()
    as_text = "::text" if conn.dialect.name == "postgresql" else ""
    page = sa.text(
        f"SELECT position, stream_id, version, type, schema_version, data{as_text} AS data, "
        f"meta{as_text} AS meta, occurred_at FROM events "
        "WHERE (stream_id, version) > (:stream_id, :version) ORDER BY stream_id, version LIMIT :limit"
    )
    update = sa.text("UPDATE events SET hash = :hash WHERE position = :position")
    after: tuple[str, int] = ("", 0)
    previous: tuple[str, str | None] = ("", None)  # (stream id, hash of its last event so far)
    while rows := conn.execute(page, {"stream_id": after[0], "version": after[1], "limit": _PAGE}).all():
        updates = []
        for row in rows:
            prior = previous[1] if previous[0] == row.stream_id else None
            h = _hash(prior, row, orjson.loads(row.data), orjson.loads(row.meta), _utc(row.occurred_at))
            updates.append({"hash": h, "position": row.position})
            previous = (row.stream_id, h)
        conn.execute(update, updates)
        after = (rows[-1].stream_id, rows[-1].version)


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("hash")
