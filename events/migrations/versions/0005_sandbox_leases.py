"""Sandbox leases: calls in flight on a sandbox, which an eviction for capacity must leave alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sandbox_leases",
        sa.Column("lease_id", sa.Text(), primary_key=True),
        sa.Column("sandbox_id", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sandbox_leases_sandbox_id", "sandbox_leases", ["sandbox_id"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_leases_sandbox_id", table_name="sandbox_leases")
    op.drop_table("sandbox_leases")
