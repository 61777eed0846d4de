"""`sandboxctl console`: refused before serving when it would be open to others without a token."""

from __future__ import annotations

from pathlib import Path

import pytest

import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from sandbox_lifecycle.adapters.console.auth import TOKEN_ENV

SHORT = "tooshort-secret"  # 15 characters


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["console", *argv])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "10.1.2.3", "console.test"])
def test_a_non_loopback_bind_without_a_token_is_refused(
    capsys: pytest.CaptureFixture[str], bind: str
) -> None:
    code, text = run(capsys, "--bind", bind, "--port", "1")
    assert code == cli.EXIT_USAGE
    assert TOKEN_ENV in text and "loopback" in text


def test_a_short_token_is_refused_and_never_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, SHORT)
    code, text = run(capsys, "--bind", "127.0.0.1", "--port", "1")
    assert code == cli.EXIT_USAGE and "too short" in text
    assert SHORT not in text


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_the_port_must_be_a_port(capsys: pytest.CaptureFixture[str], port: str) -> None:
    assert run(capsys, "--port", port)[0] == cli.EXIT_USAGE


def test_the_verb_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "console" in capsys.readouterr().out


def test_the_token_variable_is_scrubbed_from_messages() -> None:
    from sandbox_lifecycle.adapters.composition.scrubbing import environ_secrets

    assert environ_secrets({TOKEN_ENV: "x" * 20}) == ("x" * 20,)
