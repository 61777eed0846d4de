"""Every shell and Python snippet of the README runs, on the embedded defaults, so the README cannot drift
from the code again.

The fenced ```bash, ```sh and ```python blocks are extracted in order. A block that cannot run here is
marked in the README by an HTML comment on the line before it, ``<!-- snippet: skip (why) -->``; it is
reported as a skip with that reason (`pytest -rs`), and the only ones allowed are the set-up commands.

Each block runs in a fresh process, in a temporary directory, against the Docker provider with a SQLite
log in a temporary SANDBOX_DATA_DIR and a deployment of this test session:

- shell blocks run under ``bash -euo pipefail`` with the venv's ``sandboxctl`` first on PATH;
- a Python block that uses ``service`` or ``sbx`` without making them is a fragment of the "Use" section:
  it gets that section's ``service = sandbox_lifecycle.connect()``, and a body using ``sbx`` runs inside
  ``with service.turn(...) as sbx:`` (one conversation's data-app sandbox, resumed block after block).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOCKER_IMAGES
from tests.support import session
from tests.support.fixtures.providers import remove_docker_sandboxes

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
SNIPPET = re.compile(
    r"^(?:<!--\s*snippet:\s*(?P<directive>.*?)\s*-->\n)?```(?P<lang>bash|sh|python)\n(?P<code>.*?)^```",
    re.S | re.M,
)
SKIP = re.compile(r"skip\s*\((?P<reason>.+)\)$", re.S)
# The one block the test must not run: `./scripts/test` runs this test (it would recurse), and CI runs
# `./scripts/demo` on its own.
ALLOWED_SKIPS = (("./scripts/demo", "./scripts/test"),)
SNIPPET_TIMEOUT_S = 300
# The conversation whose data-app sandbox the `sbx` fragments share.
FRAGMENT_TURN = ("readme-fragments", "data-app")


@dataclass(frozen=True)
class Snippet:
    line: int
    lang: str
    code: str
    skip: str | None  # the reason, when the README marks the block skip

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{self.lang}"


def snippets(text: str) -> list[Snippet]:
    found = []
    for match in SNIPPET.finditer(text):
        skip = None
        if match["directive"] is not None:
            parsed = SKIP.fullmatch(match["directive"])
            assert parsed, (
                f"unknown snippet directive {match['directive']!r}: `skip (reason)` is the only one"
            )
            skip = parsed["reason"].strip()
        line = text.count("\n", 0, match.start("code"))  # 1-based line of the opening fence
        found.append(Snippet(line, match["lang"], match["code"], skip))
    return found


ALL = snippets(README.read_text())


def commands(code: str) -> tuple[str, ...]:
    """The commands of a shell block, comments and blank lines left out."""
    return tuple(line.split("#")[0].strip() for line in code.splitlines() if line.split("#")[0].strip())


def test_the_readme_has_snippets_of_each_kind_and_skips_only_the_set_up_commands() -> None:
    assert {s.lang for s in ALL} >= {"sh", "python"}
    assert len([s for s in ALL if s.lang == "python"]) >= 6, "the extraction found too few Python blocks"
    skipped = [s for s in ALL if s.skip is not None]
    assert all(s.skip for s in skipped), "a skip must say why"
    assert [commands(s.code) for s in skipped] == list(ALLOWED_SKIPS)
    # The directive must be the line right before the fence: one a blank line away would mark nothing.
    assert README.read_text().count("<!-- snippet:") == len(skipped)


def test_the_extraction_reads_directives_and_fences() -> None:
    text = (
        "intro\n```python\nprint(1)\n```\n\n<!-- snippet: skip (needs E2B_API_KEY) -->\n```sh\nls\n```\n"
        "```\nplain, not run\n```\n```bash\necho hi  # say hi\n```\n"
    )
    found = snippets(text)
    assert [(s.line, s.lang, s.skip) for s in found] == [
        (2, "python", None),
        (7, "sh", "needs E2B_API_KEY"),
        (13, "bash", None),
    ]
    assert commands(found[2].code) == ("echo hi",)


def _free_uses(code: str, name: str) -> bool:
    """Whether ``code`` reads ``name`` without binding it itself (an assignment, a with or a for)."""
    tree = ast.parse(code)
    loads = stores = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == name:
            if isinstance(node.ctx, ast.Load):
                loads = True
            else:
                stores = True
    return loads and not stores


def program(snippet: Snippet) -> str:
    """The Python block as a script: a fragment gets the Use section's service and turn around it."""
    code = snippet.code
    if _free_uses(code, "sbx"):
        conversation, kind = FRAGMENT_TURN
        code = f"with service.turn({conversation!r}, {kind!r}) as sbx:\n" + textwrap.indent(code, "    ")
        code += "    print('SNIPPET-SANDBOX', sbx.id)\n"
    if _free_uses(code, "service"):
        code = "service = sandbox_lifecycle.connect()\n" + code
    return "import sandbox_lifecycle\n" + code


def test_a_fragment_runs_in_the_use_sections_service_and_turn() -> None:
    made = program(Snippet(1, "python", 'sbx.exec("ls")\n', None))
    assert made.splitlines() == [
        "import sandbox_lifecycle",
        "service = sandbox_lifecycle.connect()",
        f"with service.turn({FRAGMENT_TURN[0]!r}, {FRAGMENT_TURN[1]!r}) as sbx:",
        '    sbx.exec("ls")',
        "    print('SNIPPET-SANDBOX', sbx.id)",
    ]
    whole = 'service = sandbox_lifecycle.connect()\nwith service.turn("c", "data-app") as sbx:\n    pass\n'
    assert program(Snippet(1, "python", whole, None)) == "import sandbox_lifecycle\n" + whole


@dataclass
class Place:
    env: dict[str, str]
    workdir: Path


@pytest.fixture(scope="module")
def place(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """One data dir and deployment for every snippet (the fragments resume one sandbox); removed after."""
    root = tmp_path_factory.mktemp("readme")
    deployment = session.new_deployment("readme")
    # The embedded defaults: nothing of the caller's configuration but the engine it names.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SANDBOX_", "S3_", "E2B_", "ANTHROPIC_")) and k != "NODE_ENV"
    }
    env.update(
        SANDBOX_PROVIDER="docker",
        SANDBOX_DATA_DIR=str(root / "data"),
        SANDBOX_DEPLOYMENT=deployment,
        SANDBOX_DOCKER_IMAGE=DOCKER_IMAGES["data-app"],
        SANDBOX_AI_WRITEBACK_DOCKER_IMAGE=DOCKER_IMAGES["ai-writeback"],
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH="",
    )
    try:
        yield Place(env, root)
    finally:
        remove_docker_sandboxes(docker_engine, deployments=[deployment])


def _run(argv: list[str], place: Place, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=place.env, capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S, check=False
    )


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("snippet", ALL, ids=[s.id for s in ALL])
def test_the_readme_snippet_runs(snippet: Snippet, place: Place) -> None:
    if snippet.skip is not None:
        pytest.skip(f"{snippet.id}: {snippet.skip}")
    cwd = place.workdir / f"line-{snippet.line}"
    cwd.mkdir()
    if snippet.lang == "python":
        done = _run([sys.executable, "-c", program(snippet)], place, cwd)
    else:
        done = _run(["bash", "-euo", "pipefail", "-c", snippet.code], place, cwd)
    assert done.returncode == 0, (
        f"{snippet.id} failed:\n{snippet.code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
