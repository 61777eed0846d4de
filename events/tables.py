"""The schema of the event log and its read models, as SQLAlchemy Core tables.

The alembic migrations in ``events/migrations`` create exactly this schema (a test compares them); the
store never creates tables itself outside of scratch stores.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from sandbox_lifecycle.events.names import (
    CK_POSITION_POSITIVE,
    EXPIRED_STATE,
    UQ_LIVE_CONVERSATION,
    UQ_STREAM_IDEMPOTENCY_KEY,
    UQ_STREAM_VERSION,
)

__all__ = [
    "CK_POSITION_POSITIVE",
    "EXPIRED_STATE",
    "UQ_LIVE_CONVERSATION",
    "UQ_STREAM_IDEMPOTENCY_KEY",
    "UQ_STREAM_VERSION",
    "events",
    "log_head",
    "metadata",
    "relay_checkpoints",
    "sandbox_deadlines",
    "sandbox_leases",
    "sandboxes",
]


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that only accepts aware datetimes and always reads back as aware UTC.

    SQLite has no time zones: values are stored as naive UTC text, which also keeps their text order
    equal to time order for ``due_at <= now`` comparisons.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the event log stores aware UTC datetimes only")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on Postgres: compact, and queryable by operators later on; plain JSON text elsewhere.
JsonType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (its cheap autoincrement).
PositionType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("position", PositionType, sa.Identity(), primary_key=True),
    sa.Column("stream_id", sa.Text(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("schema_version", sa.Integer(), nullable=False),
    sa.Column("data", JsonType, nullable=False),
    sa.Column("meta", JsonType, nullable=False),
    sa.Column("occurred_at", UtcDateTime(), nullable=False),
    sa.Column("idempotency_key", sa.Text(), nullable=True),
    # SHA-256 hex of the previous event's hash and this event's content (events/chain.py). NULL only on
    # a row written behind the store's back: the verifier reports it as a broken link.
    sa.Column("hash", sa.Text(), nullable=True),
    # SHA-256 hex of the previous event's log_hash in position order, this position and this event's
    # hash (events/chain.py ``log_link``): the chain over the whole log. NULL only behind the store's back.
    sa.Column("log_hash", sa.Text(), nullable=True),
    sa.UniqueConstraint("stream_id", "version", name=UQ_STREAM_VERSION),
    # Positions start at 1 (identity, or max + 1 on SQLite): a row at 0 or below was written behind the
    # store's back, where the feed (``position > after``) never shows it. Revision 0004.
    sa.CheckConstraint("position > 0", name=CK_POSITION_POSITIVE),
)

# Partial, because almost no event carries a key: the index then costs nothing on the hot path.
sa.Index(
    UQ_STREAM_IDEMPOTENCY_KEY,
    events.c.stream_id,
    events.c.idempotency_key,
    unique=True,
    postgresql_where=events.c.idempotency_key.is_not(None),
    sqlite_where=events.c.idempotency_key.is_not(None),
)

sandboxes = sa.Table(
    "sandboxes",
    metadata,
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
    sa.Column("last_activity_at", UtcDateTime(), nullable=True),
    sa.Column("state_since", UtcDateTime(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expired_reason", sa.Text(), nullable=True),
)

_live_conversation = sa.and_(
    sandboxes.c.state != sa.literal_column(f"'{EXPIRED_STATE}'"),
    sandboxes.c.conversation_id.is_not(None),
)
# One live sandbox per (conversation, kind): the database, not a read-then-write, settles a race.
sa.Index(
    UQ_LIVE_CONVERSATION,
    sandboxes.c.conversation_id,
    sandboxes.c.kind,
    unique=True,
    postgresql_where=_live_conversation,
    sqlite_where=_live_conversation,
)
sa.Index("ix_sandboxes_state", sandboxes.c.state)

sandbox_deadlines = sa.Table(
    "sandbox_deadlines",
    metadata,
    sa.Column("sandbox_id", sa.Text(), primary_key=True),
    sa.Column("kind", sa.Text(), primary_key=True),
    sa.Column("due_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
)
sa.Index("ix_sandbox_deadlines_due_at", sandbox_deadlines.c.due_at)

# Where each consumer of the feed (a webhook relay) got to: the position of the last event it delivered.
relay_checkpoints = sa.Table(
    "relay_checkpoints",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

# The log's head: the position and log hash of its last event, one row (id 1), updated by every append
# in its transaction. Postgres appends read the previous log hash from here: an UPDATE of a row that a
# concurrent append changed and committed acts on its newest version (READ COMMITTED re-checks it), where
# a read of ``events`` would see the statement's older snapshot. A log cut short at its end while this
# row still names the cut events shows; a writer who rewrites this row too is what a head kept outside
# the database catches.
log_head = sa.Table(
    "log_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("hash", sa.Text(), nullable=False),
    # The head before the last append, as that append's UPDATE found it (Postgres reads it back).
    sa.Column("previous_hash", sa.Text(), nullable=False),
    sa.CheckConstraint("id = 1", name="ck_log_head_one_row"),
)
# Every database created from these tables (scratch stores, tests) starts with the empty log's head, as
# the migration writes it: appends update this row, never insert it.
sa.event.listen(
    log_head,
    "after_create",
    sa.DDL("INSERT INTO log_head (id, position, hash, previous_hash) VALUES (1, 0, '', '')"),  # type: ignore[no-untyped-call]
)
# Calls in flight on a sandbox (an exec, a file call, a wait on a background process): while one of its
# leases is unexpired, an eviction for capacity may not suspend it (core/inflight.py). Not history, so not
# events: a lease is taken and dropped around every call, and a crashed holder's row simply expires.
sandbox_leases = sa.Table(
    "sandbox_leases",
    metadata,
    sa.Column("lease_id", sa.Text(), primary_key=True),
    sa.Column("sandbox_id", sa.Text(), nullable=False),
    sa.Column("holder", sa.Text(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)
sa.Index("ix_sandbox_leases_sandbox_id", sandbox_leases.c.sandbox_id)
