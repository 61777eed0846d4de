"""The import graph and sizes of the package's modules, read from the source with ``ast`` (nothing imported).

Used by tests/unit/test_architecture.py and by ``scripts/architecture`` (run it to see the cycles and line
counts). Which folder holds which part of ``sandbox_lifecycle`` comes from pyproject.toml's
``[tool.setuptools.package-dir]``, so this sees exactly the modules a wheel ships, under their import names.

Every import counts: top level, under ``if TYPE_CHECKING:``, inside functions, and
``importlib.import_module("...")`` with a literal name. ``from X import name`` is an edge to ``X.name``
when that is a module, else to ``X``. Importing a module also runs its parents' ``__init__``, but those
are not counted as edges: the package's ``__init__`` re-exports the public API, so every module would
otherwise sit in one cycle with it and the graph would say nothing.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys
import tomllib
from collections import deque
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = "sandbox_lifecycle"
MAX_LINES = 700
# Alembic's generated revision files: data more than code, kept as generated.
SIZE_EXEMPT = ("events/migrations/versions/",)


@dataclasses.dataclass(frozen=True)
class Module:
    name: str  # the import name, e.g. sandbox_lifecycle.core.service
    path: Path  # relative to ROOT
    is_package: bool  # an __init__.py

    @property
    def package(self) -> str:
        """The package relative imports in this module start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


def package_roots(root: Path = ROOT) -> dict[str, Path]:
    """Import name -> folder (relative to ``root``) for each top of the mapping in pyproject.toml."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: Path(folder) for name, folder in sorted(mapping.items())}


def discover(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the package, by import name; links are not followed (there must be none)."""
    modules: dict[str, Module] = {}
    for top, folder in package_roots(root).items():
        for dirpath, dirnames, filenames in os.walk(root / folder, followlinks=False):
            here = Path(dirpath).relative_to(root)
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for filename in sorted(filenames):
                if not filename.endswith(".py"):
                    continue
                path = here / filename
                parts = list(path.relative_to(folder).with_suffix("").parts)
                is_package = parts[-1] == "__init__"
                if is_package:
                    parts.pop()
                name = ".".join([top, *parts])
                modules[name] = Module(name, path, is_package)
    return modules


def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    base = module.package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(module: Module, known: Iterable[str], root: Path = ROOT) -> set[str]:
    """The modules ``module`` imports (every import statement in it, resolved to module names)."""
    known = set(known)
    tree = ast.parse((root / module.path).read_text(encoding="utf-8"), filename=str(module.path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_relative(module, node.level, node.module) if node.level else node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            found.add(node.args[0].value)
    found.discard(module.name)
    return found


@dataclasses.dataclass(frozen=True)
class Graph:
    modules: dict[str, Module]
    # Module -> the names it imports: ours and others (the layer rules look at both).
    imports: dict[str, set[str]]

    def internal_edges(self) -> dict[str, set[str]]:
        return {name: {t for t in targets if t in self.modules} for name, targets in self.imports.items()}


def build_graph(root: Path = ROOT) -> Graph:
    modules = discover(root)
    return Graph(modules, {name: imports_of(m, modules, root) for name, m in modules.items()})


def strongly_connected(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other, in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[frozenset[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(frozenset(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def cycles(graph: Graph) -> list[frozenset[str]]:
    """Each set of modules that import one another in a circle (a module importing itself counts)."""
    edges = graph.internal_edges()
    return sorted(
        (g for g in strongly_connected(edges) if len(g) > 1 or next(iter(g)) in edges[next(iter(g))]),
        key=lambda g: sorted(g),
    )


def _shortest_path(
    edges: dict[str, set[str]], start: str, goals: set[str], within: frozenset[str]
) -> list[str]:
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges[node] & within):
            if child in came_from and child not in goals:
                continue
            if (child in goals and child != start) or (child == start and start in goals):
                path = [child, node]
                while (prev := came_from[path[-1]]) is not None:
                    path.append(prev)
                return path[::-1]
            came_from[child] = node
            queue.append(child)
    raise AssertionError(f"{goals} unreachable from {start} inside {sorted(within)}")


def chain(graph: Graph, group: frozenset[str]) -> str:
    """A readable closed walk through every module of the circle: ``a -> b -> c -> a``."""
    edges = graph.internal_edges()
    start = min(group)
    walk = [start]
    left = set(group) - {start}
    while left:
        walk += _shortest_path(edges, walk[-1], left, group)[1:]
        left -= set(walk)
    walk += _shortest_path(edges, walk[-1], {start}, group)[1:]
    return " -> ".join(short(name) for name in walk)


def short(name: str) -> str:
    """The name without the package prefix (the package itself stays as it is)."""
    return name.removeprefix(PACKAGE + ".")


def line_counts(graph: Graph, root: Path = ROOT) -> dict[str, int]:
    """Lines per module file, path (relative to the root, posix) -> count, largest first."""
    counts = {
        m.path.as_posix(): len((root / m.path).read_text(encoding="utf-8").splitlines())
        for m in graph.modules.values()
    }
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def oversized(graph: Graph, root: Path = ROOT) -> dict[str, int]:
    return {
        path: n
        for path, n in line_counts(graph, root).items()
        if n > MAX_LINES and not path.startswith(SIZE_EXEMPT)
    }


# Layer rules: modules under the first name import nothing under the second.
FORBIDDEN = (
    (f"{PACKAGE}.events", f"{PACKAGE}.core"),
    (f"{PACKAGE}.events", f"{PACKAGE}.adapters"),
    (f"{PACKAGE}.core", f"{PACKAGE}.adapters"),
)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_violations(graph: Graph) -> list[str]:
    return [
        f"{short(source)} imports {short(target)}"
        for source, targets in sorted(graph.imports.items())
        for target in sorted(targets)
        for layer, forbidden in FORBIDDEN
        if _within(source, layer) and _within(target, forbidden)
    ]


def symlinks(root: Path = ROOT) -> list[str]:
    """Links anywhere in the package's folders (sandbox_lifecycle/ and the folders mapped into it)."""
    found = []
    for folder in package_roots(root).values():
        for dirpath, dirnames, filenames in os.walk(root / folder, followlinks=False):
            for entry in dirnames + filenames:
                if (Path(dirpath) / entry).is_symlink():
                    found.append((Path(dirpath) / entry).relative_to(root).as_posix())
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/architecture", description="Import cycles, layer breaches and module sizes."
    )
    parser.add_argument("--all", action="store_true", help="the line count of every module, not the largest")
    args = parser.parse_args(argv)
    graph = build_graph()
    found = cycles(graph)
    print(f"== import cycles: {len(found)}")
    for group in found:
        print(f"  ({len(group)} modules) {chain(graph, group)}")
    breaches = layer_violations(graph)
    print(f"== layer breaches: {len(breaches)}")
    for breach in breaches:
        print(f"  {breach}")
    links = symlinks()
    print(f"== links in the package: {len(links)}")
    for link in links:
        print(f"  {link}")
    counts = line_counts(graph)
    shown = counts if args.all else {p: n for p, n in counts.items() if n > MAX_LINES * 0.7}
    print(f"== lines per module ({len(counts)} modules; over {MAX_LINES} marked *)")
    for path, n in shown.items():
        mark = "*" if n > MAX_LINES and not path.startswith(SIZE_EXEMPT) else " "
        print(f"  {mark} {n:5d}  {path}")
    if not args.all:
        print(f"  ... {len(counts) - len(shown)} more under {int(MAX_LINES * 0.7)} lines (--all shows them)")
    return 1 if found or breaches or links or oversized(graph) else 0


if __name__ == "__main__":
    sys.exit(main())
