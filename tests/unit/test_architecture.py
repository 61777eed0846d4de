"""The house rules that keep the package navigable, checked on the source (tests/unit/architecture_rules.py).

No import cycle, no module over 700 lines, the layers (events/ <- core/ <- adapters/), no link in the
package. What exists today and is being taken apart is listed in KNOWN_CYCLES and KNOWN_OVERSIZED: the
test tolerates those, and fails when one no longer occurs, so the lists can only shrink. When you break a
cycle or split a module, delete its entry (or write the smaller cycle that remains).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit import architecture_rules as rules

# Each a set of modules that import one another in a circle (without the `sandbox_lifecycle.` prefix).
KNOWN_CYCLES: set[frozenset[str]] = {
    frozenset({"adapters.entrypoints.cli.commands", "adapters.entrypoints.cli.processes"}),
    frozenset({"adapters.entrypoints.cli.doctor", "adapters.entrypoints.cli.doctor_network"}),
    frozenset({"adapters.entrypoints.cli.pretty", "adapters.entrypoints.cli.render"}),
    frozenset(
        {
            "adapters.providers.docker.processes",
            "adapters.providers.docker.provider",
            "adapters.providers.docker.snapshot",
        }
    ),
    frozenset({"adapters.providers.e2b.processes", "adapters.providers.e2b.provider"}),
    frozenset(
        {
            "core.capacity",
            "core.inflight",
            "core.outcomes",
            "core.pool",
            "core.processes",
            "core.recovery",
            "core.service",
        }
    ),
    frozenset({"events.store.base", "events.store.postgres", "events.store.sqlite"}),
}

# Files over rules.MAX_LINES lines, relative to the repository root.
KNOWN_OVERSIZED: set[str] = {
    "adapters/composition/settings.py",
    "adapters/entrypoints/cli/commands.py",
    "adapters/providers/docker/network.py",
    "adapters/providers/docker/provider.py",
    "adapters/providers/e2b/provider.py",
    "core/service.py",
}


@pytest.fixture(scope="module")
def graph() -> rules.Graph:
    return rules.build_graph()


def test_the_scan_sees_the_whole_package(graph: rules.Graph) -> None:
    # A scan that lost its way (a wrong mapping, links skipped) would find too little to fail on.
    assert len(graph.modules) > 80
    for name in (
        "sandbox_lifecycle",
        "sandbox_lifecycle.core.service",
        "sandbox_lifecycle.events.store.base",
        "sandbox_lifecycle.events.migrations.env",
        "sandbox_lifecycle.adapters.entrypoints.cli",
        "sandbox_lifecycle.adapters.providers.docker.provider",
    ):
        assert name in graph.modules, name
    assert graph.modules["sandbox_lifecycle.core.service"].path == Path("core/service.py")


def _edges(source: str, files: dict[str, str], tmp_path: Path) -> set[str]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = {
        "p": rules.Module("p", Path("p/__init__.py"), True),
        "p.a": rules.Module("p.a", Path("p/a.py"), False),
        "p.b": rules.Module("p.b", Path("p/b.py"), False),
        "p.sub": rules.Module("p.sub", Path("p/sub/__init__.py"), True),
        "p.sub.c": rules.Module("p.sub.c", Path("p/sub/c.py"), False),
    }
    return rules.imports_of(modules[source], modules, tmp_path)


def test_every_kind_of_import_is_an_edge(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from p import b\n"  # a module, by `from package import module`
        "def f():\n"
        "    from .sub import c, NAME\n"  # relative; a module and a name of the package
        "    return importlib.import_module('p')\n"
    )
    files = {"p/__init__.py": "", "p/sub/__init__.py": "", "p/sub/c.py": "", "p/a.py": source}
    assert _edges("p.a", files, tmp_path) == {"typing", "importlib", "p.b", "p.sub.c", "p.sub", "p"}
    files["p/sub/c.py"] = "from ..a import thing\nfrom .. import b\n"
    assert _edges("p.sub.c", files, tmp_path) == {"p.a", "p.b"}


def test_cycles_are_found_and_told_as_a_chain(tmp_path: Path) -> None:
    modules = {n: rules.Module(n, Path(n), False) for n in ("x.a", "x.b", "x.c", "x.d")}
    graph = rules.Graph(modules, {"x.a": {"x.b"}, "x.b": {"x.c", "os"}, "x.c": {"x.a"}, "x.d": {"x.a"}})
    (cycle,) = rules.cycles(graph)
    assert cycle == {"x.a", "x.b", "x.c"}
    assert rules.chain(graph, cycle) == "x.a -> x.b -> x.c -> x.a"


def test_no_new_import_cycle_and_the_known_ones_still_exist(graph: rules.Graph) -> None:
    found = {frozenset(rules.short(n) for n in group) for group in rules.cycles(graph)}
    new = [
        rules.chain(graph, group)
        for group in rules.cycles(graph)
        if not any({rules.short(n) for n in group} <= known for known in KNOWN_CYCLES)
    ]
    assert new == [], "import cycles (count every import, TYPE_CHECKING and function-level too)"
    gone = sorted(sorted(known) for known in KNOWN_CYCLES - found)
    assert gone == [], "these known cycles are gone or smaller: update KNOWN_CYCLES to what remains"


def test_no_new_oversized_module_and_the_known_ones_still_are(graph: rules.Graph) -> None:
    over = rules.oversized(graph)
    assert {p: n for p, n in over.items() if p not in KNOWN_OVERSIZED} == {}, (
        f"modules over {rules.MAX_LINES} lines: split them by concern"
    )
    assert sorted(KNOWN_OVERSIZED - set(over)) == [], (
        f"these are no longer over {rules.MAX_LINES} lines (or gone): delete them from KNOWN_OVERSIZED"
    )


def test_layers_events_then_core_then_adapters(graph: rules.Graph) -> None:
    assert rules.layer_violations(graph) == []


def test_no_link_in_the_package() -> None:
    assert rules.symlinks() == []
    assert not any(p.is_symlink() for p in (rules.ROOT / rules.PACKAGE).iterdir())
