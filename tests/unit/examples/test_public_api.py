"""The examples use the public API only, as the README tells an application to: `sandbox_lifecycle` and
its documented public names, never a module beneath it (`sandbox_lifecycle.adapters...`,
`sandbox_lifecycle.core...`), whose layout may change between releases."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import sandbox_lifecycle

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
# The public submodules: importable by their dotted name (docs/agent.md, the package docstring).
PUBLIC_MODULES = frozenset({"sandbox_lifecycle", "sandbox_lifecycle.scripted_model"})


def internal_uses(source: str, filename: str = "<example>") -> list[str]:
    """Every place ``source`` reaches below the public API: an import of a non-public submodule, a name
    imported from ``sandbox_lifecycle`` that it does not export, an attribute path through one, or a
    module named as a string (importlib.import_module, mock.patch)."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if _internal(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _internal(node.module):
                found.append(f"{where}: from {node.module} import ...")
            elif node.module == "sandbox_lifecycle":
                found += [
                    f"{where}: from sandbox_lifecycle import {a.name} (not exported)"
                    for a in node.names
                    if a.name not in sandbox_lifecycle.__all__
                ]
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted and dotted.count(".") == 1 and dotted.startswith("sandbox_lifecycle."):
                name = dotted.split(".", 1)[1]
                if name not in sandbox_lifecycle.__all__:
                    found.append(f"{where}: {dotted}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if " " not in text and _internal(text.split(":")[0]):
                found.append(f"{where}: {text!r}")
    return found


def _internal(module: str) -> bool:
    return module.startswith("sandbox_lifecycle.") and not any(
        module == public or module.startswith(public + ".")
        for public in PUBLIC_MODULES - {"sandbox_lifecycle"}
    )


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def test_the_checker_finds_each_way_of_reaching_an_internal_module() -> None:
    for bad in (
        "from sandbox_lifecycle.adapters.agent.claude_code import run_agent",
        "import sandbox_lifecycle.core.kinds",
        "from sandbox_lifecycle import make_it_up",
        "import sandbox_lifecycle\nsandbox_lifecycle.core.kinds.HOME",
        "import importlib\nimportlib.import_module('sandbox_lifecycle.adapters.entrypoints.cli.demo')",
        "from unittest import mock\nmock.patch('sandbox_lifecycle.core.service.utcnow')",
    ):
        assert internal_uses(bad), bad
    for fine in (
        "import sandbox_lifecycle\nsandbox_lifecycle.connect()",
        "from sandbox_lifecycle import HOME, run_agent",
        "from sandbox_lifecycle.scripted_model import Reply",
        "import sandbox_lifecycle\nsandbox_lifecycle.scripted_model.ScriptedModel",
        "x = 'sandbox_lifecycle is the package'",
    ):
        assert internal_uses(fine) == [], fine


def test_no_example_imports_a_module_below_the_public_api() -> None:
    sources = sorted(EXAMPLES.rglob("*.py"))
    # demo.py, the jobs, the FastAPI backend: the scan must be looking at them.
    names = {p.relative_to(EXAMPLES).as_posix() for p in sources}
    assert {"demo.py", "jobs/writeback.py", "jobs/data_app.py", "fastapi_backend/app.py"} <= names
    offenders = [
        use for path in sources for use in internal_uses(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert offenders == []


def test_every_exported_name_resolves() -> None:
    for name in sandbox_lifecycle.__all__:
        assert getattr(sandbox_lifecycle, name) is not None, name


def test_importing_the_package_loads_none_of_the_lazy_names() -> None:
    # `import sandbox_lifecycle` is the first thing every sandboxctl command does: the agent, the renderer,
    # git and the scripted model load on first use only.
    probe = "import json, sys, sandbox_lifecycle; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    lazy = {
        "sandbox_lifecycle.scripted_model",
        "sandbox_lifecycle.adapters.agent.claude_code",
        "sandbox_lifecycle.adapters.agent.events",
        "sandbox_lifecycle.adapters.agent.scripted_model",
        "sandbox_lifecycle.adapters.entrypoints.cli.render",
        "sandbox_lifecycle.core.git",
        "sandbox_lifecycle.core.service",
    }
    assert not loaded & lazy, loaded & lazy
