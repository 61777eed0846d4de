"""Build the sandbox kinds' E2B templates and tag them ``name:tag``, the ids the E2B provider asks for.

    E2B_API_KEY=... python -m sandboxes.build_e2b_templates [--kind data-app] [--base-image IMAGE]

Run from the repository root. Each kind's template is defined in ``sandboxes/<kind dir>/template.py`` from
the Dockerfile beside it, so the E2B template and the Docker provider's image are one definition. Names
and tags come from the same variables the provider reads (``E2B_TEMPLATE_NAME`` / ``E2B_TEMPLATE_TAG``,
``E2B_AI_WRITEBACK_TEMPLATE_NAME`` / ``E2B_AI_WRITEBACK_TEMPLATE_TAG``; the tag defaults to the package
version), so what is built is what gets used.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

from e2b import Template, default_build_logger
from e2b.template.main import TemplateBuilder

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BSettings
from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP

HERE = Path(__file__).resolve().parent
KIND_DIRS = {DATA_APP: HERE / "data-apps", AI_WRITEBACK: HERE / "ai-writeback"}
# Account the images create (uid 1000, home core.kinds.HOME). E2B runs commands as the template's last
# USER and envd resolves it by name, so the Dockerfile's numeric `USER 1000:1000` is restated by name.
SANDBOX_USER = "sandbox"

_BASE_IMAGE_ARG = re.compile(r"^ARG\s+BASE_IMAGE=(\S+)\s*$", re.MULTILINE)
_FROM_BASE_IMAGE = re.compile(r"^FROM\s+\$\{?BASE_IMAGE\}?\s*$", re.MULTILINE)
_CMD = re.compile(r"^CMD\s.*$", re.MULTILINE)


def e2b_dockerfile(dockerfile: str, base_image: str | None = None) -> str:
    """The kind's Dockerfile as E2B should build it.

    E2B's Dockerfile converter does not expand a build ARG in ``FROM``, so the ``BASE_IMAGE`` default (or
    ``base_image``) is written in. The ``CMD`` that keeps a Docker container alive is dropped: an E2B
    sandbox stays up by itself, and E2B would run it as a start command and wait on it before every boot.
    """
    default = _BASE_IMAGE_ARG.search(dockerfile)
    if default is None or _FROM_BASE_IMAGE.search(dockerfile) is None:
        raise ValueError("expected `ARG BASE_IMAGE=<image>` and `FROM ${BASE_IMAGE}` in the Dockerfile")
    if re.search(r"^CMD\s.*\\$", dockerfile, re.MULTILINE):
        raise ValueError("a CMD continued over several lines is not supported here")
    resolved = _FROM_BASE_IMAGE.sub(f"FROM {base_image or default.group(1)}", dockerfile)
    return _CMD.sub("", resolved)


def kind_template(kind_dir: Path, base_image: str | None = None) -> TemplateBuilder:
    """The E2B template built from the Dockerfile in ``kind_dir`` (also the context of any COPY)."""
    dockerfile = e2b_dockerfile((kind_dir / "Dockerfile").read_text(encoding="utf-8"), base_image)
    return Template(file_context_path=kind_dir).from_dockerfile(dockerfile).set_user(SANDBOX_USER)


def load_template(kind: str) -> ModuleType:
    """``sandboxes/<kind dir>/template.py`` (the directory names are not importable package names)."""
    path = KIND_DIRS[kind] / "template.py"
    spec = importlib.util.spec_from_file_location(f"e2b_template_{kind.replace('-', '_')}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", choices=sorted(KIND_DIRS), action="append", help="default: every kind")
    parser.add_argument("--base-image", help="override the Dockerfile's BASE_IMAGE default")
    parser.add_argument("--cpu-count", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=2048)
    args = parser.parse_args(argv)
    try:
        settings = E2BSettings.from_env(os.environ if environ is None else environ)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for kind in args.kind or sorted(KIND_DIRS):
        name = settings.templates[kind]
        print(f"building E2B template {name} ({kind}) ...", file=sys.stderr)
        info = Template.build(
            load_template(kind).template(args.base_image),
            name,
            cpu_count=args.cpu_count,
            memory_mb=args.memory_mb,
            on_build_logs=default_build_logger(),
            api_key=settings.api_key,
            api_url=settings.api_url,
            domain=settings.domain,
        )
        print(f"built {name}: template {info.template_id}, build {info.build_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
