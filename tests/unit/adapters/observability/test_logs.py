"""Structured logs: every line of a sandbox's work names it and its correlation id; no secret gets out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.observability.logs import configure_logging
from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.core.observe import log_context
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import FakeProvider

SECRET = "sk-ant-test-4b1d0c3f9e"
log = logging.getLogger("sandbox_lifecycle.test_logs")


class ChattyProvider(FakeProvider):
    """Logs from inside the provider's create, as a real provider's library might, secret included."""

    def create(self, sandbox_id: str, kind: str) -> str:
        log.warning("creating with key %s", SECRET)
        try:
            raise RuntimeError(f"upstream said: bad key {SECRET}")
        except RuntimeError:
            log.exception("a retried call failed")
        return super().create(sandbox_id, kind)

    def read_file(self, ref: str, path: str) -> bytes:
        log.warning("reading %s", path)
        return super().read_file(ref, path)


@pytest.fixture
def service(tmp_path: Path) -> SandboxService:
    env = {"SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_PROVIDER": "docker"}
    return build_service(env, provider=ChattyProvider())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_sandbox_and_correlation_id(service: SandboxService) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", [SECRET], stream=out)
    row = service.create("data-app", "conv")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    created = [line for line in lines if line["logger"] == log.name]
    assert [line["message"] for line in created] == ["creating with key ***", "a retried call failed"]
    for line in created:
        assert line["sandbox_id"] == row.id
        assert len(line["correlation_id"]) == 32
        assert line["level"] in ("warning", "error") and line["time"].endswith("+00:00")
    # One transition, one correlation id, recorded in the log as well.
    (cid,) = {line["correlation_id"] for line in created}
    assert cid in {r.metadata.get("correlation_id") for r in service.store.read_stream(row.id)}
    assert "upstream said: bad key ***" in created[1]["exception"]
    assert SECRET not in out.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_are_readable_and_scrubbed(service: SandboxService) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "text", [SECRET], stream=out)
    row = service.create("data-app", "conv")
    text = out.getvalue()
    first = next(line for line in text.splitlines() if "creating with key" in line)
    assert f"WARNING {log.name} [sandbox={row.id} cid=" in first
    assert first.endswith(": creating with key ***")
    assert "RuntimeError: upstream said: bad key ***" in text
    assert SECRET not in text


@pytest.mark.usefixtures("restore_logging")
def test_lines_outside_a_sandbox_have_no_ids_and_inner_blocks_nest() -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", stream=out)
    log.info("outside")
    with log_context(sandbox_id="abc"):
        with log_context(correlation_id="c1"):
            log.info("inner")
        log.info("after")
    outside, inner, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert "sandbox_id" not in outside and "correlation_id" not in outside
    assert (inner["sandbox_id"], inner["correlation_id"]) == ("abc", "c1")
    assert after["sandbox_id"] == "abc" and "correlation_id" not in after


def test_the_log_format_setting_is_validated(tmp_path: Path) -> None:
    assert Settings.from_env({"SANDBOX_DATA_DIR": str(tmp_path)}).log_format == "text"
    env = {"SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_LOG_FORMAT": "JSON"}
    assert Settings.from_env(env).log_format == "json"
    with pytest.raises(ConfigError, match="SANDBOX_LOG_FORMAT must be one of text, json, got 'xml'"):
        Settings.from_env({"SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_LOG_FORMAT": "xml"})


@pytest.mark.usefixtures("restore_logging")
def test_lines_of_a_call_on_a_live_sandbox_name_it(service: SandboxService) -> None:
    row = service.create("data-app", "conv")
    service.write_file(row.id, "a.txt", b"a")
    out = io.StringIO()
    configure_logging(logging.INFO, "json", stream=out)
    assert service.read_file(row.id, "a.txt") == b"a"
    (line,) = [json.loads(x) for x in out.getvalue().splitlines() if "reading" in x]
    assert line["sandbox_id"] == row.id and "correlation_id" not in line
