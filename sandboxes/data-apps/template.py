"""E2B template of the `data-app` sandbox: the Dockerfile beside this file, as E2B builds it.

Built and tagged by `python -m sandboxes.build_e2b_templates --kind data-app`.
"""

from __future__ import annotations

from pathlib import Path

from e2b.template.main import TemplateBuilder

from sandbox_lifecycle.core.kinds import DATA_APP
from sandboxes.build_e2b_templates import kind_template

KIND = DATA_APP


def template(base_image: str | None = None) -> TemplateBuilder:
    return kind_template(Path(__file__).resolve().parent, base_image)
