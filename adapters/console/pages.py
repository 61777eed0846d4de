"""The console's pages as HTML text: Fleet, Sandbox, Audit, Live. Rendering only: what each page shows
is read by the app (adapters/console/app.py) and handed in; every value from the log goes through
``html.esc``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sandbox_lifecycle.adapters.console.fleet import FILTERS, FleetPage
from sandbox_lifecycle.adapters.console.html import (
    Markup,
    esc,
    join,
    link,
    page,
    query,
    sandbox_href,
    table,
    tag,
    when,
)
from sandbox_lifecycle.adapters.console.svg import ForkNode, fork_tree, spans, state_diagram, timeline_band
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.audit import AuditReport
from sandbox_lifecycle.core.checkpoints import Checkpoint
from sandbox_lifecycle.core.replay import HistoryEntry
from sandbox_lifecycle.events.records import RecordedEvent, SandboxRow

# How far a lineage is followed from the sandbox shown: the forks of a busy sandbox can be many.
LINEAGE_DEPTH = 50
LINEAGE_NODES = 100


def _limit(used: int, limit: int | None) -> Markup:
    return esc(f"{used} / {limit}" if limit is not None else f"{used} (no limit)")


def _options(name: str, values: Sequence[str], chosen: str) -> Markup:
    opts = [tag("option", "any", value="")] + [
        tag("option", v, value=v, selected="selected" if v == chosen else None) for v in values
    ]
    return tag("label", join([f"{name} ", tag("select", join(opts), name=name)]))


def _count(n: int | None) -> str:
    return "?" if n is None else str(n)


def fleet(view: FleetPage, deployment: str, base: str = "/") -> str:
    counts, cap, q = view.counts, view.capacity, view.query
    kinds = sorted(set(counts.kinds) | set(cap.max_live_per_kind))
    summary = table(
        ["", "live (holds compute)", "suspended", "total"],
        [["all kinds", _limit(counts.live, cap.max_live), counts.suspended, counts.total]]
        + [
            [
                kind,
                _limit(counts.live_by_kind.get(kind, 0), cap.max_live_per_kind.get(kind)),
                counts.suspended_by_kind.get(kind, 0),
                "",
            ]
            for kind in kinds
        ],
        class_="summary",
    )
    by_state = join(
        tag("span", f"{state} {counts.by_state[state]}", class_=f"pill s-{state}")
        for state in lc.STATES
        if counts.by_state.get(state)
    )
    f = q.filters
    form = tag(
        "form",
        join(
            [
                _options("state", [s for s in lc.STATES if s != lc.NEW], f.get("state", "")),
                _options("kind", counts.kinds, f.get("kind", "")),
                _options("provider", counts.providers, f.get("provider", "")),
                tag(
                    "label",
                    join(
                        [
                            "conversation ",
                            tag("input", "", name="conversation", value=f.get("conversation", "")),
                        ]
                    ),
                ),
                tag("label", join(["id ", tag("input", "", name="id", value=f.get("id", ""))])),
                tag("button", "filter", type="submit"),
                link("./", "clear"),
            ]
        ),
        method="get",
        action="./",
        class_="filters",
    )
    rows = [
        [
            link(sandbox_href(r.id), r.id),
            tag("span", r.state, class_=f"pill s-{r.state}"),
            r.kind,
            r.conversation_id or "-",
            r.provider,
            when(r.last_activity_at or r.created_at),
            _count(view.checkpoints.get(r.id, 0)),
        ]
        for r in view.rows
    ]
    listing = table(
        ["sandbox", "state", "kind", "conversation", "provider", "last activity", "checkpoints"],
        rows,
        class_="fleet",
    )
    params = {k: f.get(k) for k in FILTERS} | {"size": q.size if q.size != 50 else None}
    nav = join(
        [
            link(query("./", params | {"page": q.page - 1}), "previous", rel="prev") if q.page > 1 else "",
            tag("span", f"page {q.page} of {view.pages} ({view.matching} matching)", class_="pageinfo"),
            link(query("./", params | {"page": q.page + 1}), "next", rel="next")
            if q.page < view.pages
            else "",
        ]
    )
    body = join(
        [summary, tag("p", by_state, class_="states"), form, listing, tag("nav", nav, class_="pager")]
    )
    return page("Fleet", body, current="./", deployment=deployment, script=True, base=base)


def lineage(
    sandbox_id: str,
    history_of: Callable[[str], Sequence[HistoryEntry] | None],
    checkpoints_of: Callable[[str], Sequence[int]],
) -> list[ForkNode]:
    """The fork tree ``sandbox_id`` belongs to: up its ForkedFrom events to the first sandbox, then down
    every Forked event (bounded: LINEAGE_DEPTH up, LINEAGE_NODES in all). ``history_of`` is None for a
    sandbox the log no longer holds."""
    histories: dict[str, Sequence[HistoryEntry]] = {}

    def history(sid: str) -> Sequence[HistoryEntry]:
        if sid not in histories:
            histories[sid] = history_of(sid) or ()
        return histories[sid]

    def origin(sid: str) -> tuple[str | None, int | None]:
        for e in history(sid):
            if e.type == "ForkedFrom":
                version = e.data.get("source_version")
                return str(e.data.get("source_id")), version if isinstance(version, int) else None
        return None, None

    root, seen = sandbox_id, {sandbox_id}
    for _ in range(LINEAGE_DEPTH):
        parent, _v = origin(root)
        if parent is None or parent in seen or not history(parent):
            break
        seen.add(parent)
        root = parent
    nodes: list[ForkNode] = []
    queue, placed = [root], set()
    while queue and len(nodes) < LINEAGE_NODES:
        sid = queue.pop(0)
        if sid in placed:
            continue
        placed.add(sid)
        parent, at = origin(sid)
        nodes.append(ForkNode(sid, parent, at, tuple(checkpoints_of(sid))))
        queue += [str(e.data.get("fork_id")) for e in history(sid) if e.type == "Forked"]
    return nodes


def _event_detail(data: Mapping[str, Any]) -> str:
    """An event's data as one short line (times and hashes left out: the table shows the time)."""
    shown = [
        f"{k}={v}" for k, v in data.items() if k not in ("at", "actor", "reason") and v not in (None, "", [])
    ]
    text = " ".join(shown)
    return text if len(text) <= 160 else text[:157] + "..."


def _amount(value: object, unit: str = "") -> str:
    """A measured number as shown: "-" when the provider could not measure it (never a made-up 0)."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def _statuses(value: object) -> str:
    if not isinstance(value, Mapping) or not value:
        return "-"
    return " ".join(f"{code}:{count}" for code, count in sorted(value.items()))


def usage_table(entries: Sequence[HistoryEntry]) -> Markup:
    """One row per run a suspend or destroy ended (``UsageRecorded``, issue R): what the provider measured."""
    runs = [e for e in entries if e.type == "UsageRecorded"]
    if not runs:
        return tag(
            "p", "no usage recorded (the provider does not meter, or no run has ended)", class_="nousage"
        )
    return table(
        [
            "ended",
            "since",
            "CPU s",
            "peak memory",
            "egress in",
            "egress out",
            "model calls",
            "tokens in",
            "tokens out",
            "statuses",
        ],
        [
            [
                when(e.occurred_at),
                _amount(e.data.get("since")),
                _amount(e.data.get("cpu_seconds")),
                _amount(e.data.get("memory_peak_bytes"), " B"),
                _amount(e.data.get("egress_bytes_in"), " B"),
                _amount(e.data.get("egress_bytes_out"), " B"),
                _amount(e.data.get("model_requests")),
                _amount(e.data.get("model_input_tokens")),
                _amount(e.data.get("model_output_tokens")),
                _statuses(e.data.get("model_statuses")),
            ]
            for e in runs
        ],
        class_="usage",
    )


def sandbox(
    row: SandboxRow,
    entries: Sequence[HistoryEntry],
    checkpoints: Sequence[Checkpoint],
    tree: Sequence[ForkNode],
    now: datetime,
    deployment: str,
    base: str = "/",
) -> str:
    facts = table(
        ["state", "kind", "provider", "conversation", "created", "last activity", "version"],
        [
            [
                tag("span", row.state, class_=f"pill s-{row.state}"),
                row.kind,
                row.provider,
                row.conversation_id or "-",
                when(row.created_at),
                when(row.last_activity_at),
                row.version,
            ]
        ],
        class_="facts",
    )
    changes = [(e.occurred_at, e.to_state) for e in entries]
    until = entries[-1].occurred_at if row.state == lc.EXPIRED and entries else now
    band = timeline_band(spans(changes, until))
    events = table(
        ["v", "time", "event", "state", "reason", "actor", "detail"],
        [
            [
                e.version,
                when(e.occurred_at),
                e.type,
                f"{e.from_state} -> {e.to_state}" if e.from_state != e.to_state else e.to_state,
                e.reason,
                e.actor,
                _event_detail(e.data),
            ]
            for e in entries
        ],
        class_="events",
    )
    cps = (
        table(
            ["version", "taken", "reason", "bytes", "new bytes", "current"],
            [
                [
                    c.version,
                    when(c.at),
                    c.reason,
                    "-" if c.bytes is None else c.bytes,
                    "-" if c.bytes_new is None else c.bytes_new,
                    "yes" if c.current else "",
                ]
                for c in checkpoints
            ],
            class_="checkpoints",
        )
        if checkpoints
        else tag("p", "no checkpoints")
    )
    taken = {(e.from_state, e.to_state) for e in entries if e.from_state != e.to_state}
    body = join(
        [
            tag("p", tag("code", row.id), class_="sid"),
            facts,
            tag("h2", "Timeline"),
            band,
            tag("h2", "Usage per run"),
            usage_table(entries),
            tag("h2", "Checkpoints and forks"),
            cps,
            fork_tree(tree, row.id) if len(tree) > 1 else tag("p", "no forks", class_="noforks"),
            tag("h2", "Path through the lifecycle"),
            state_diagram(taken, row.state),
            tag("h2", "Events"),
            events,
        ]
    )
    return page(f"Sandbox {row.id}", body, current="", deployment=deployment, base=base)


def audit(
    report: AuditReport,
    head: Mapping[str, Any] | None,
    head_error: str | None,
    deployment: str,
    base: str = "/",
) -> str:
    ok = report.ok and head_error is None
    verdict = tag(
        "div",
        "the hash chains verify: the log is intact"
        if ok
        else "verification FAILED: the log cannot be trusted as it stands",
        class_="verdict ok" if ok else "verdict failed",
        id="verdict",
        data_ok="true" if ok else "false",
    )
    stats = tag(
        "p",
        f"{report.streams} streams, {report.events} events; "
        f"log head at position {report.head[0]} ({report.head[1] or 'empty log'})",
    )
    broken = (
        table(
            ["stream", "from version", "what"],
            [[link(sandbox_href(b.stream_id), b.stream_id), b.version, b.detail] for b in report.broken],
            class_="broken",
        )
        if report.broken
        else ""
    )
    log_break = tag("p", str(report.log), class_="logbreak") if report.log is not None else ""
    if head_error is not None:
        anchor = tag("p", f"signed head: {head_error}", class_="anchor failed")
    elif head is None:
        anchor = tag(
            "p", "no signed head given (sandboxctl console --head FILE): only the chains were checked"
        )
    else:
        covered = (
            "the log holds everything up to it unchanged"
            if report.anchor_problem is None
            else f"NOT intact: {report.anchor_problem}"
        )
        anchor = tag(
            "p",
            f"signed head: position {head['position']}, signed at {head['signed_at']} "
            f"by key {head['key_id']} for deployment {head['deployment']}: {covered}",
            class_="anchor ok" if report.anchor_problem is None else "anchor failed",
        )
        if not head.get("pinned"):
            anchor = join(
                [
                    anchor,
                    tag(
                        "p",
                        "its signature was checked only against the key it carries, which proves nothing "
                        "about who signed it: pin the deployment's key (sandboxctl console --public-key)",
                        class_="unpinned",
                    ),
                ]
            )
    body = join([verdict, stats, anchor, log_break, broken])
    return page("Audit", body, current="audit", deployment=deployment, base=base)


def live_event(e: RecordedEvent) -> dict[str, Any]:
    """What the live page shows of one event (and the stream sends): never the event's whole data."""
    return {
        "position": e.position,
        "sandbox": e.stream_id,
        "href": sandbox_href(e.stream_id),
        "version": e.version,
        "type": e.type,
        "at": e.occurred_at.isoformat(timespec="milliseconds"),
        "reason": e.metadata.get("reason"),
        "actor": e.metadata.get("actor"),
    }


def live(recent: Sequence[RecordedEvent], after: int, deployment: str, base: str = "/") -> str:
    rows = [
        [
            e["position"],
            e["at"],
            link(e["href"], e["sandbox"]),
            e["version"],
            e["type"],
            e["reason"] or "-",
            e["actor"] or "-",
        ]
        for e in map(live_event, reversed(recent))
    ]
    body = join(
        [
            tag("p", "connecting...", id="live-status", class_="status"),
            table(
                ["position", "time", "sandbox", "v", "event", "reason", "actor"],
                rows,
                id="live",
                data_after=str(after),
                class_="events",
            ),
        ]
    )
    return page("Live", body, current="live", deployment=deployment, script=True, base=base)


def not_found(what: str, deployment: str, base: str = "/") -> str:
    return page("Not found", tag("p", what), current="", deployment=deployment, base=base)
