"""Pictures drawn on the server as SVG: the state diagram, a sandbox's timeline band, the fork tree.

The state diagram is drawn from ``lifecycle.TRANSITIONS``, the one transition table: a state the table
gains is drawn without a change here. States sit on a circle in the table's order; an edge bends to its
left, so the two directions between a pair of states never overlap; triggers that keep the state are
listed under it. Labels are escaped like every other text (``html.esc``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sandbox_lifecycle.adapters.console.html import Markup, join, sandbox_href, tag
from sandbox_lifecycle.core import lifecycle as lc

DIAGRAM_SIZE = 560
_RADIUS = 210
_NODE_R = 34


def table_edges(table: Sequence[dict[str, object]] = lc.TRANSITIONS) -> dict[tuple[str, str], list[str]]:
    """(source, dest) -> the triggers leading there, from the transition table ("=" is the source)."""
    out: dict[tuple[str, str], list[str]] = {}
    for row in table:
        source = row["source"]
        sources = [source] if isinstance(source, str) else list(source)  # type: ignore[call-overload]
        for s in sources:
            dest = s if row["dest"] == "=" else str(row["dest"])
            triggers = out.setdefault((s, dest), [])
            if row["trigger"] not in triggers:
                triggers.append(str(row["trigger"]))
    return out


def _positions(states: Sequence[str]) -> dict[str, tuple[float, float]]:
    c = DIAGRAM_SIZE / 2
    step = 2 * math.pi / len(states)
    return {
        s: (c + _RADIUS * math.sin(i * step), c - _RADIUS * math.cos(i * step)) for i, s in enumerate(states)
    }


def state_diagram(
    taken: Iterable[tuple[str, str]] = (), current: str | None = None, states: Sequence[str] = lc.STATES
) -> Markup:
    """The lifecycle's states and transitions; ``taken`` (source, dest) pairs and the states on them are
    highlighted (class ``taken``), ``current`` is marked (class ``current``)."""
    taken = set(taken)
    visited = {s for pair in taken for s in pair}
    pos = _positions(states)
    parts: list[Markup] = [
        Markup(
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>'
        )
    ]
    loops: dict[str, list[str]] = {}
    for (source, dest), triggers in sorted(table_edges().items()):
        if source == dest:
            loops.setdefault(source, []).extend(triggers)
            continue
        if source not in pos or dest not in pos:
            continue
        (x1, y1), (x2, y2) = pos[source], pos[dest]
        dx, dy = x2 - x1, y2 - y1
        length = math.hypot(dx, dy) or 1.0
        ux, uy = dx / length, dy / length
        # Start and end on the circles' rims; the control point bends the edge to its left.
        sx, sy, ex, ey = x1 + ux * _NODE_R, y1 + uy * _NODE_R, x2 - ux * _NODE_R, y2 - uy * _NODE_R
        bend = 0.18 * length
        cx, cy = (sx + ex) / 2 + uy * bend, (sy + ey) / 2 - ux * bend
        cls = "edge taken" if (source, dest) in taken else "edge"
        label = ", ".join(triggers)
        parts.append(
            tag(
                "g",
                join(
                    [
                        tag("title", f"{source} -> {dest}: {label}"),
                        tag(
                            "path",
                            "",
                            d=f"M{sx:.1f},{sy:.1f} Q{cx:.1f},{cy:.1f} {ex:.1f},{ey:.1f}",
                            marker_end="url(#arrow)",
                        ),
                        tag(
                            "text",
                            label,
                            x=f"{(sx + ex) / 4 + cx / 2:.1f}",
                            y=f"{(sy + ey) / 4 + cy / 2:.1f}",
                        ),
                    ]
                ),
                class_=cls,
                data_edge=f"{source} {dest}",
            )
        )
    for state in states:
        x, y = pos[state]
        cls = "state" + (" taken" if state in visited else "") + (" current" if state == current else "")
        loop = loops.get(state)
        parts.append(
            tag(
                "g",
                join(
                    [
                        tag("title", f"{state}" + (f" (stays on {', '.join(loop)})" if loop else "")),
                        tag("circle", "", cx=f"{x:.1f}", cy=f"{y:.1f}", r=str(_NODE_R)),
                        tag("text", state, x=f"{x:.1f}", y=f"{y + 4:.1f}"),
                        tag(
                            "text",
                            f"{len(loop)} in place" if loop else "",
                            x=f"{x:.1f}",
                            y=f"{y + 18:.1f}",
                            class_="loop",
                        ),
                    ]
                ),
                class_=cls,
                data_state=state,
            )
        )
    return tag(
        "svg",
        join(parts),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {DIAGRAM_SIZE} {DIAGRAM_SIZE}",
        class_="diagram",
        role="img",
        aria_label="the sandbox state diagram",
    )


@dataclass(frozen=True, slots=True)
class Span:
    state: str
    start: datetime
    end: datetime


def spans(changes: Sequence[tuple[datetime, str]], until: datetime) -> list[Span]:
    """The states over time: each (time, state entered) lasts until the next change, the last until
    ``until``; a change that keeps the state extends the span it is in."""
    out: list[Span] = []
    for i, (at, state) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else max(until, at)
        if out and out[-1].state == state:
            out[-1] = Span(state, out[-1].start, end)
        else:
            out.append(Span(state, at, end))
    return out


BAND_WIDTH = 900
BAND_HEIGHT = 56


def timeline_band(band: Sequence[Span]) -> Markup:
    """The spans as one horizontal band, time left to right, one colour per state (class ``s-STATE``)."""
    if not band:
        return Markup("")
    start, end = band[0].start, band[-1].end
    total = max((end - start).total_seconds(), 1e-6)

    def x(at: datetime) -> float:
        return (at - start).total_seconds() / total * BAND_WIDTH

    parts = []
    for span in band:
        x0 = x(span.start)
        width = max(x(span.end) - x0, 1.0)
        parts.append(
            tag(
                "g",
                join(
                    [
                        tag("title", f"{span.state}: {span.start.isoformat()} to {span.end.isoformat()}"),
                        tag("rect", "", x=f"{x0:.1f}", y="0", width=f"{width:.1f}", height="32"),
                        tag("text", span.state if width > 60 else "", x=f"{x0 + 4:.1f}", y="21"),
                    ]
                ),
                class_=f"span s-{span.state}",
                data_state=span.state,
            )
        )
    parts.append(tag("text", start.strftime("%Y-%m-%d %H:%M:%S"), x="0", y="50", class_="tick"))
    parts.append(tag("text", end.strftime("%Y-%m-%d %H:%M:%S"), x=str(BAND_WIDTH), y="50", class_="tick end"))
    return tag(
        "svg",
        join(parts),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {BAND_WIDTH} {BAND_HEIGHT}",
        class_="band",
        role="img",
        aria_label="states over time",
    )


@dataclass(frozen=True, slots=True)
class ForkNode:
    sandbox_id: str
    parent: str | None  # the sandbox it was forked from
    at_version: int | None  # the parent's checkpoint it was forked from
    checkpoints: tuple[int, ...]  # the versions of its own checkpoints


_COL, _ROW = 230, 54


def fork_tree(nodes: Sequence[ForkNode], current: str) -> Markup:
    """The lineage as a tree, roots left, forks to the right; each node links to its sandbox's page."""
    children: dict[str | None, list[ForkNode]] = {}
    ids = {n.sandbox_id for n in nodes}
    for n in nodes:
        children.setdefault(n.parent if n.parent in ids else None, []).append(n)
    placed: list[tuple[ForkNode, int, int]] = []

    def place(node: ForkNode, depth: int) -> None:
        placed.append((node, depth, len(placed)))
        for child in children.get(node.sandbox_id, []):
            place(child, depth + 1)

    for root in children.get(None, []):
        place(root, 0)
    where = {n.sandbox_id: (d * _COL + 10, row * _ROW + 10) for n, d, row in placed}
    parts: list[Markup] = []
    for node, _, _ in placed:
        if node.parent in where:
            (px, py), (x, y) = where[node.parent], where[node.sandbox_id]
            parts.append(
                tag(
                    "g",
                    join(
                        [
                            tag(
                                "path",
                                "",
                                d=f"M{px + 190},{py + 18} C{px + 210},{py + 18} "
                                f"{x - 20},{y + 18} {x},{y + 18}",
                            ),
                            tag("text", f"v{node.at_version}", x=f"{x - 34}", y=f"{y + 14}"),
                        ]
                    ),
                    class_="fork-edge",
                )
            )
    for node, _, _ in placed:
        x, y = where[node.sandbox_id]
        marks = ", ".join(f"v{v}" for v in node.checkpoints) or "no checkpoints"
        parts.append(
            tag(
                "a",
                join(
                    [
                        tag("rect", "", x=str(x), y=str(y), width="190", height="36", rx="5"),
                        tag("text", node.sandbox_id, x=str(x + 8), y=str(y + 15)),
                        tag("text", marks, x=str(x + 8), y=str(y + 30), class_="marks"),
                    ]
                ),
                href=sandbox_href(node.sandbox_id),
                class_="fork-node current" if node.sandbox_id == current else "fork-node",
                data_sandbox=node.sandbox_id,
            )
        )
    width = max((d for _, d, _ in placed), default=0) * _COL + 220
    height = len(placed) * _ROW + 20
    return tag(
        "svg",
        join(parts),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {width} {height}",
        width=str(width),
        height=str(height),
        class_="tree",
        role="img",
        aria_label="fork lineage",
    )
