"""core/ stays a tree: no import circle among its modules (every import counted, `TYPE_CHECKING` and
function-level ones too) and no module over 700 lines."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[3] / "core"
PREFIX = "sandbox_lifecycle.core"


def _imports(path: Path, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PREFIX:
                found |= {alias.name for alias in node.names if alias.name in modules}
            elif node.module.startswith(PREFIX + "."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith(PREFIX + ".")}
    return found - {path.stem}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for dep in sorted(graph.get(node, ())):
            if found := visit(dep, [*path, node]):
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        if found := visit(start, []):
            return found
    return None


def test_no_import_circle_in_core() -> None:
    paths = sorted(CORE.glob("*.py"))
    modules = {p.stem for p in paths}
    assert "kernel" in modules
    graph = {p.stem: _imports(p, modules) for p in paths}
    assert _cycle(graph) is None, _cycle(graph)


def test_the_checker_sees_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_core_module_over_700_lines() -> None:
    long = {p.name: n for p in CORE.glob("*.py") if (n := len(p.read_text().splitlines())) >= 700}
    assert long == {}
