"""The operations docs list every variable the settings read; the architecture diagram is current."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox_lifecycle.core import lifecycle

ROOT = Path(__file__).parents[3]


def test_every_variable_of_the_settings_is_documented() -> None:
    # The root's parser, the variables it shares, the secret ones, and each provider's own.
    composition = ROOT / "adapters" / "composition"
    parsers = [composition / name for name in ("settings.py", "environ.py", "scrubbing.py")]
    parsers += sorted((ROOT / "adapters" / "providers").glob("*/settings.py"))
    source = "".join(path.read_text() for path in parsers)
    names = set(re.findall(r'"((?:SANDBOX|E2B|S3|NODE|ANTHROPIC)_[A-Z0-9_]*[A-Z0-9])"', source))
    docs = (ROOT / "docs" / "operations.md").read_text() + (ROOT / "README.md").read_text()
    missing = sorted(name for name in names if f"`{name}`" not in docs)
    assert not missing, f"add these to the env table of docs/operations.md: {missing}"


def test_the_architecture_diagram_is_the_generated_one() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert lifecycle.mermaid().strip() in doc, "regenerate the diagram in docs/architecture.md"
