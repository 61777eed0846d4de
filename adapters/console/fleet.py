"""The fleet as the console reads it: one page of the ``sandboxes`` read model, filtered, and the counts.

Everything comes from the read model (one row per sandbox, kept by every append in its transaction):
a page is one indexed query with LIMIT/OFFSET and the counts one GROUP BY, so a log of 10,000 sandboxes
renders as fast as one of ten (bench/console_bench.py). Only the checkpoint counts are not in the read
model: they are a fold of the stream, so the page folds its own rows' streams (at most ``MAX_PAGE``),
never the fleet's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.events.records import SandboxRow
from sandbox_lifecycle.events.tables import sandboxes

DEFAULT_PAGE = 50
MAX_PAGE = 200
# The filters a fleet page takes, as query parameters; anything else in the query is ignored.
FILTERS = ("state", "kind", "provider", "conversation", "id")


def bounded_int(raw: str | None, default: int, low: int, high: int) -> int:
    """A query parameter as an int in [low, high]; the default when absent or not a number."""
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return min(max(value, low), high)


@dataclass(frozen=True, slots=True)
class FleetQuery:
    """One page of the fleet: filters (exact state, kind, provider; prefix of conversation and id)."""

    filters: Mapping[str, str] = field(default_factory=dict)
    page: int = 1
    size: int = DEFAULT_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> FleetQuery:
        filters = {k: v for k in FILTERS if (v := params.get(k, "").strip())}
        return cls(
            filters=filters,
            page=bounded_int(params.get("page"), 1, 1, 10**9),
            size=bounded_int(params.get("size"), DEFAULT_PAGE, 1, MAX_PAGE),
        )

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


def _prefix(column: Any, text: str) -> Any:
    """``column`` starts with ``text`` (LIKE with the wildcards in ``text`` escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")


def _where(filters: Mapping[str, str]) -> list[Any]:
    c = sandboxes.c
    out: list[Any] = []
    for name, column in (("state", c.state), ("kind", c.kind), ("provider", c.provider)):
        if name in filters:
            out.append(column == filters[name])
    if "conversation" in filters:
        out.append(_prefix(c.conversation_id, filters["conversation"]))
    if "id" in filters:
        out.append(_prefix(c.id, filters["id"]))
    return out


@dataclass(frozen=True, slots=True)
class Counts:
    """Sandboxes by state, and holding compute (``lifecycle.holds_compute``) in all and per kind."""

    total: int
    by_state: Mapping[str, int]
    live: int
    live_by_kind: Mapping[str, int]
    suspended: int
    suspended_by_kind: Mapping[str, int]
    kinds: tuple[str, ...]
    providers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FleetPage:
    rows: list[SandboxRow]
    checkpoints: Mapping[str, int | None]  # None: the stream cannot be read
    matching: int  # rows matching the filters, over every page
    query: FleetQuery
    counts: Counts
    capacity: Capacity

    @property
    def pages(self) -> int:
        return max(1, -(-self.matching // self.query.size))


def counts(engine: sa.Engine) -> Counts:
    c = sandboxes.c
    stmt = sa.select(c.state, c.kind, c.provider, c.provider_ref.is_not(None), sa.func.count()).group_by(
        c.state, c.kind, c.provider, c.provider_ref.is_not(None)
    )
    with engine.connect() as conn:
        groups = conn.execute(stmt).all()
    by_state: dict[str, int] = {}
    live_by_kind: dict[str, int] = {}
    suspended_by_kind: dict[str, int] = {}
    kinds: set[str] = set()
    providers: set[str] = set()
    for state, kind, provider, has_ref, n in groups:
        by_state[state] = by_state.get(state, 0) + n
        kinds.add(kind)
        providers.add(provider)
        if lc.holds_compute(state, "ref" if has_ref else None):
            live_by_kind[kind] = live_by_kind.get(kind, 0) + n
        if state == lc.SUSPENDED:
            suspended_by_kind[kind] = suspended_by_kind.get(kind, 0) + n
    return Counts(
        total=sum(by_state.values()),
        by_state=by_state,
        live=sum(live_by_kind.values()),
        live_by_kind=live_by_kind,
        suspended=by_state.get(lc.SUSPENDED, 0),
        suspended_by_kind=suspended_by_kind,
        kinds=tuple(sorted(kinds)),
        providers=tuple(sorted(providers)),
    )


def _row(r: Any) -> SandboxRow:
    return SandboxRow(**{name: getattr(r, name) for name in sandboxes.c.keys()})  # noqa: SIM118


def fleet_page(
    engine: sa.Engine,
    query: FleetQuery,
    capacity: Capacity,
    checkpoint_count: Callable[[str], int | None],
) -> FleetPage:
    """The page ``query`` asks for, newest activity first (then id, so pages never overlap)."""
    c = sandboxes.c
    where = _where(query.filters)
    recent = sa.func.coalesce(c.last_activity_at, c.created_at)
    stmt = (
        sa.select(sandboxes)
        .where(*where)
        .order_by(recent.desc(), c.id)
        .limit(query.size)
        .offset(query.offset)
    )
    with engine.connect() as conn:
        matching = conn.execute(sa.select(sa.func.count()).select_from(sandboxes).where(*where)).scalar_one()
        rows = [_row(r) for r in conn.execute(stmt)]
    return FleetPage(
        rows=rows,
        checkpoints={row.id: checkpoint_count(row.id) for row in rows},
        matching=matching,
        query=query,
        counts=counts(engine),
        capacity=capacity,
    )
