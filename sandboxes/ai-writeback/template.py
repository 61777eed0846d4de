"""E2B template of the `ai-writeback` sandbox: the Dockerfile beside this file, as E2B builds it.

Built and tagged by `python -m sandboxes.build_e2b_templates --kind ai-writeback`.
"""

from __future__ import annotations

from pathlib import Path

from e2b.template.main import TemplateBuilder

from sandbox_lifecycle.core.kinds import AI_WRITEBACK
from sandboxes.build_e2b_templates import kind_template

KIND = AI_WRITEBACK


def template(base_image: str | None = None) -> TemplateBuilder:
    return kind_template(Path(__file__).resolve().parent, base_image)
