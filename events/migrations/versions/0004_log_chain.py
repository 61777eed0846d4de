"""The log's chain: every event also chains to the event before it in position order (``log_hash``),
and the ``log_head`` row holds the last event's position and log hash.

Backfills ``log_hash`` over the log written before, in position order, from each event's stream hash
(revision 0002), and writes the head row. As with 0002, what was done to the log before this revision
cannot be told; what is done after it can. Writers must be stopped during the upgrade (on Postgres the
ALTER TABLE holds every append back until the migration commits anyway).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAGE = 5000


# A frozen copy of events/chain.py's ``log_link``: a migration must not change when the code does. A
# test checks that the backfilled log verifies with the current code.
def _log_link(previous: str | None, position: int, stream_hash: str) -> str:
    return sha256(f"{previous or ''}:{position}:{stream_hash}".encode("ascii")).hexdigest()


def upgrade() -> None:
    op.add_column("events", sa.Column("log_hash", sa.Text(), nullable=True))
    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("previous_hash", sa.Text(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_log_head_one_row"),
    )
    conn = op.get_bind()
    page = sa.text("SELECT position, hash FROM events WHERE position > :after ORDER BY position LIMIT :limit")
    update = sa.text("UPDATE events SET log_hash = :log_hash WHERE position = :position")
    after, previous, last = 0, "", ""
    while rows := conn.execute(page, {"after": after, "limit": _PAGE}).all():
        updates = []
        for position, stream_hash in rows:
            last, previous = previous, _log_link(previous, position, stream_hash or "")
            updates.append({"log_hash": previous, "position": position})
        conn.execute(update, updates)
        after = rows[-1][0]
    conn.execute(
        sa.text("INSERT INTO log_head (id, position, hash, previous_hash) VALUES (1, :p, :h, :ph)"),
        {"p": after, "h": previous, "ph": last},
    )


def downgrade() -> None:
    op.drop_table("log_head")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("log_hash")
