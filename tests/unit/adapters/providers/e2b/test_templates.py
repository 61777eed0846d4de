"""The kinds' E2B templates, rendered offline with the SDK's own serialisers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from e2b import Template

from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME, KINDS
from sandboxes import build_e2b_templates
from sandboxes.build_e2b_templates import KIND_DIRS, e2b_dockerfile, load_template


def _steps(rendered: dict[str, Any], kind: str) -> list[list[str]]:
    return [step["args"] for step in rendered["steps"] if step["type"] == kind]


def _dockerfile_default_base(kind: str) -> str:
    text = (KIND_DIRS[kind] / "Dockerfile").read_text()
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("kind", [DATA_APP, AI_WRITEBACK])
def test_template_is_the_kinds_dockerfile_for_e2b(kind: str) -> None:
    module = load_template(kind)
    assert kind == module.KIND

    rendered = json.loads(Template.to_json(module.template()))

    assert rendered["fromImage"] == _dockerfile_default_base(kind)
    # Commands run as the sandbox account, by name, in the kind's workdir.
    assert _steps(rendered, "USER")[-1] == ["sandbox"]
    assert _steps(rendered, "WORKDIR")[-1] == [KINDS[kind].workdir]
    assert ["HOME", HOME] in _steps(rendered, "ENV")
    assert any(
        "useradd --uid 1000" in args[0] and f"--home-dir {HOME}" in args[0]
        for args in _steps(rendered, "RUN")
    )
    # Docker's keep-alive CMD is not an E2B start command: nothing to start, nothing to wait for.
    assert "startCmd" not in rendered and "readyCmd" not in rendered
    dockerfile = Template.to_dockerfile(module.template())
    assert dockerfile.startswith(f"FROM {_dockerfile_default_base(kind)}\n")
    assert "sleep infinity" not in dockerfile and "${BASE_IMAGE}" not in dockerfile


def test_base_image_can_be_overridden() -> None:
    rendered = json.loads(Template.to_json(load_template(DATA_APP).template("registry.example/node:20")))
    assert rendered["fromImage"] == "registry.example/node:20"


def test_dockerfile_without_a_base_image_arg_is_refused() -> None:
    with pytest.raises(ValueError, match="BASE_IMAGE"):
        e2b_dockerfile("FROM debian:bookworm\nCMD sleep infinity\n")


def test_build_refuses_without_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_e2b_templates.main([], {}) == 2
    assert "E2B_API_KEY" in capsys.readouterr().err


def test_build_tags_each_template_name_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, dict[str, Any]]] = []

    def fake_build(template: object, name: str, **options: Any) -> object:
        built.append((name, options))
        return type("BuildInfo", (), {"template_id": "t", "build_id": "b"})()

    # The build itself needs the E2B cloud; what is checked here is what would be asked of it.
    monkeypatch.setattr(Template, "build", fake_build)
    env = {"E2B_API_KEY": "k", "E2B_TEMPLATE_TAG": "1.2.3", "E2B_AI_WRITEBACK_TEMPLATE_NAME": "acme/wb"}

    assert build_e2b_templates.main([], env) == 0

    names = sorted(name for name, _ in built)
    # The writeback tag is unset: the package version, or "latest" when it is not installed.
    assert names[0].startswith("acme/wb:") and names[0] != "acme/wb:"
    assert names[1] == "lightdash/lightdash-data-app:1.2.3"
    assert all(options["api_key"] == "k" for _, options in built)
