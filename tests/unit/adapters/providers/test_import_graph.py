"""The providers' modules import each other in one direction only: no circle, counting imports inside
functions and under ``if TYPE_CHECKING:`` too (a helper takes what it needs, never its provider)."""

from __future__ import annotations

import ast
from pathlib import Path

import sandbox_lifecycle.adapters.providers as providers

PACKAGE = "sandbox_lifecycle.adapters.providers"


def _modules() -> dict[str, Path]:
    root = Path(providers.__file__).parent
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join((PACKAGE, *parts)).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in modules else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name in modules}


def test_no_import_circle_among_the_providers_modules() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    circles: list[list[str]] = []
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert circles == []
    # The helpers sit under their provider, never beside it; only the folder's registry entry (its
    # ``__init__``) builds the provider, and another provider may build on it (gvisor's on docker's).
    for folder in (f"{PACKAGE}.docker", f"{PACKAGE}.e2b"):
        provider = f"{folder}.provider"
        users = [name for name, deps in graph.items() if provider in deps]
        assert [name for name in users if name != folder and not name.endswith(".provider")] == []
