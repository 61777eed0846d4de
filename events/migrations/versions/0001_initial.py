"""Initial schema: the events log, the sandboxes read model and sandbox_deadlines.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in events/tables.py: a migration must not change when the models do.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        # Identity keeps CACHE 1 (the default): a per-session cache would hand out positions out of
        # commit order, which the tailing guarantee of the store relies on.
        sa.Column("position", POSITION, sa.Identity(), primary_key=True),
        sa.Column("stream_id", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
    )
    op.create_index(
        "uq_events_stream_idempotency_key",
        "events",
        ["stream_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
    )

    op.create_table(
        "sandboxes",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.Text(), nullable=True),
        sa.Column("provider_ref", sa.Text(), nullable=True),
        sa.Column("snapshot_key", sa.Text(), nullable=True),
        sa.Column("snapshot_sha256", sa.Text(), nullable=True),
        sa.Column("snapshot_bytes", sa.BigInteger(), nullable=True),
        sa.Column("last_activity_at", TIMESTAMP, nullable=True),
        sa.Column("state_since", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expired_reason", sa.Text(), nullable=True),
    )
    live = sa.text("state <> 'expired' AND conversation_id IS NOT NULL")
    op.create_index(
        "uq_sandboxes_live_conversation",
        "sandboxes",
        ["conversation_id", "kind"],
        unique=True,
        postgresql_where=live,
        sqlite_where=live,
    )
    op.create_index("ix_sandboxes_state", "sandboxes", ["state"])

    op.create_table(
        "sandbox_deadlines",
        sa.Column("sandbox_id", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), primary_key=True),
        sa.Column("due_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_sandbox_deadlines_due_at", "sandbox_deadlines", ["due_at"])


def downgrade() -> None:
    op.drop_table("sandbox_deadlines")
    op.drop_table("sandboxes")
    op.drop_table("events")
