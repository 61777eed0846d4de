"""The house rules that keep the package navigable, checked on the source (tests/unit/architecture_rules.py).

No import cycle, no module over 700 lines, the layers (events/ <- core/ <- adapters/), no link in the
package. No exceptions are listed: a cycle or a large module is split before it lands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit import architecture_rules as rules


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


def test_no_import_cycle(graph: rules.Graph) -> None:
    found = [rules.chain(graph, group) for group in rules.cycles(graph)]
    assert found == [], "import cycles (count every import, TYPE_CHECKING and function-level too)"


def test_no_module_over_the_line_limit(graph: rules.Graph) -> None:
    assert rules.oversized(graph) == {}, f"modules over {rules.MAX_LINES} lines: split them by concern"


def test_layers_events_then_core_then_adapters(graph: rules.Graph) -> None:
    assert rules.layer_violations(graph) == []


def test_no_link_in_the_package() -> None:
    assert rules.symlinks() == []
    assert not any(p.is_symlink() for p in (rules.ROOT / rules.PACKAGE).iterdir())
