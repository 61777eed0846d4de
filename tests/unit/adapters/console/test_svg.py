"""The pictures: the state diagram is the transition table, the band is the states over time, the fork
tree is the lineage."""

from __future__ import annotations

import re
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.console.svg import (
    ForkNode,
    Span,
    fork_tree,
    spans,
    state_diagram,
    table_edges,
)
from sandbox_lifecycle.core import lifecycle as lc
from tests.support.store_helpers import T0

MOVES = sorted({(s, d) for s, _t, d in lc.edges() if s != d})


def test_the_table_edges_are_the_machines() -> None:
    from_table = {(s, t, d) for (s, d), triggers in table_edges().items() for t in triggers}
    assert from_table == set(lc.edges())


def test_the_diagram_draws_every_state_and_every_move_of_the_table() -> None:
    svg = state_diagram()
    assert re.findall(r'data-state="([^"]+)"', svg) == list(lc.STATES)
    assert sorted(tuple(e.split(" ")) for e in re.findall(r'data-edge="([^"]+)"', svg)) == MOVES
    assert "taken" not in svg and "current" not in svg
    # Triggers that keep the state are listed with it, not drawn as edges.
    assert "idle (stays on" in svg


@given(st.sets(st.sampled_from(MOVES)), st.sampled_from(lc.STATES))
def test_exactly_the_moves_taken_are_highlighted(taken: set[tuple[str, str]], current: str) -> None:
    svg = state_diagram(taken, current)
    highlighted = {tuple(e.split(" ")) for e in re.findall(r'class="edge taken" data-edge="([^"]+)"', svg)}
    assert highlighted == taken
    states = set(re.findall(r'class="state taken[^"]*" data-state="([^"]+)"', svg))
    assert states == {s for pair in taken for s in pair}
    assert re.findall(r'class="state[^"]* current" data-state="([^"]+)"', svg) == [current]


def test_spans_merge_changes_that_keep_the_state_and_end_at_until() -> None:
    t = [T0 + timedelta(minutes=m) for m in range(6)]
    changes = [(t[0], "creating"), (t[1], "idle"), (t[2], "idle"), (t[3], "running"), (t[4], "idle")]
    assert spans(changes, t[5]) == [
        Span("creating", t[0], t[1]),
        Span("idle", t[1], t[3]),
        Span("running", t[3], t[4]),
        Span("idle", t[4], t[5]),
    ]
    # A last change after ``until`` (clock skew) still ends no earlier than it starts.
    assert spans([(t[5], "idle")], t[0]) == [Span("idle", t[5], t[5])]
    assert spans([], t[0]) == []


def test_the_fork_tree_nests_forks_under_their_source_and_links_them() -> None:
    nodes = [
        ForkNode("root", None, None, (3, 7)),
        ForkNode("child", "root", 3, ()),
        ForkNode("grandchild", "child", 2, (2,)),
        ForkNode("sibling", "root", 7, ()),
    ]
    svg = fork_tree(nodes, "child")
    assert re.findall(r'data-sandbox="([^"]+)"', svg) == ["root", "child", "grandchild", "sibling"]
    assert svg.count('class="fork-edge"') == 3
    assert 'href="sandboxes/child" class="fork-node current"' in svg
    assert ">v3, v7<" in svg and ">no checkpoints<" in svg
    for label in (">v3<", ">v2<", ">v7<"):
        assert label in svg


def test_the_fork_tree_escapes_ids() -> None:
    svg = fork_tree([ForkNode("<x>", None, None, ()), ForkNode('"y', "<x>", 1, ())], "<x>")
    assert "<x>" not in svg and "&lt;x&gt;" in svg and "sandboxes/%3Cx%3E" in svg
