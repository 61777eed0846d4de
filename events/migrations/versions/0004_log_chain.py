"""The log's chain: every event also chains to the event before it in position order (``log_hash``),
and the ``log_head`` row holds the last event's position and log hash. Positions must be above 0.

Backfills ``log_hash`` over the log written before, in position order, from each event's stream hash
(revision 0002) and idempotency key, and writes the head row. Then adds ``CHECK (position > 0)``: a
row at 0 or below is outside what the feed shows (``position > after``); one found here was written
behind the store's back, and the upgrade stops naming it rather than chain or drop it. As with 0002, what was done to the log before this revision
cannot be told; what is done after it can. Writers must be stopped during the upgrade (on Postgres the
ALTER TABLE holds every append back until the migration commits anyway).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAGE = 5000


_CHECK = "ck_events_position_positive"
_CHECK_SQL = f"CONSTRAINT {_CHECK} CHECK (position > 0)"


# A frozen copy of events/chain.py's ``log_link``: a migration must not change when the code does. A
# test checks that the backfilled log verifies with the current code.
def _log_link(previous: str | None, position: int, stream_hash: str, key: str | None) -> str:
    text = f"{previous or ''}:{position}:{stream_hash}" + ("" if key is None else f":{key}")
    return sha256(text.encode("utf-8")).hexdigest()


def _rebuild_sqlite_events(conn: sa.Connection, change: Callable[[str], str]) -> None:
    """Recreate SQLite's events table from its own CREATE statement as ``change`` edits it.

    Not alembic's batch mode: that rebuilds from reflection, which would have to get right the
    ``INTEGER PRIMARY KEY`` that makes position the rowid and the partial unique index on the
    idempotency key. The stored statement and index definitions are replayed exactly instead.
    """
    (create,) = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'")
    ).one()
    indexes = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL")
    ).scalars().all()
    head, _, body = create.partition("(")
    if head.split()[-1].strip('"') != "events":
        raise RuntimeError(f"unexpected definition of the events table: {create!r}")
    conn.execute(sa.text(change(f"CREATE TABLE _events_0004 ({body}")))
    conn.execute(sa.text("INSERT INTO _events_0004 SELECT * FROM events"))
    conn.execute(sa.text("DROP TABLE events"))
    conn.execute(sa.text("ALTER TABLE _events_0004 RENAME TO events"))
    for index in indexes:
        conn.execute(sa.text(index))


def _add_check(create: str) -> str:
    body = create.rstrip().removesuffix(")").rstrip()
    return f"{body}, \n\t{_CHECK_SQL}\n)"


def _drop_check(create: str) -> str:
    return create.replace(f", \n\t{_CHECK_SQL}\n", "\n")


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
    outside = conn.execute(sa.text("SELECT count(*), min(position) FROM events WHERE position <= 0")).one()
    if outside[0]:
        raise RuntimeError(
            f"{outside[0]} event(s) at position 0 or below (the lowest {outside[1]}): the store never "
            "writes them, so they were written behind its back. Review them (`sandboxctl audit verify` "
            "names them) and remove them before upgrading."
        )
    page = sa.text(
        "SELECT position, hash, idempotency_key FROM events WHERE position > :after "
        "ORDER BY position LIMIT :limit"
    )
    update = sa.text("UPDATE events SET log_hash = :log_hash WHERE position = :position")
    after, previous, last = 0, "", ""
    while rows := conn.execute(page, {"after": after, "limit": _PAGE}).all():
        updates = []
        for position, stream_hash, key in rows:
            last, previous = previous, _log_link(previous, position, stream_hash or "", key)
            updates.append({"log_hash": previous, "position": position})
        conn.execute(update, updates)
        after = rows[-1][0]
    conn.execute(
        sa.text("INSERT INTO log_head (id, position, hash, previous_hash) VALUES (1, :p, :h, :ph)"),
        {"p": after, "h": previous, "ph": last},
    )
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite_events(conn, _add_check)
    else:
        op.create_check_constraint(_CHECK, "events", sa.text("position > 0"))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite_events(conn, _drop_check)
    else:
        op.drop_constraint(_CHECK, "events", type_="check")
    op.drop_table("log_head")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("log_hash")
