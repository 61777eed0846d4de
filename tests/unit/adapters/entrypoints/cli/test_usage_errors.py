"""Usage mistakes the issue found ending in a traceback or a raw runtime error: each is one clear line
and the usage exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from sandbox_lifecycle.events.store import open_store
from tests.support.store_helpers import event

SANDBOXCTL = str(Path(sys.executable).parent / "sandboxctl")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    yield tmp_path


def _lines(err: str) -> list[str]:
    """The error lines (argparse's usage block, as for every usage error of the CLI, apart)."""
    return [line for line in err.splitlines() if line.startswith("sandboxctl") or "Error" in line]


def test_a_position_past_64_bits_is_a_usage_error(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["events", "--after", "99999999999999999999999"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "2^63-1" in err and "Traceback" not in err
    assert len(_lines(err)) == 1
    assert cli.main(["events", "--after", str(2**63 - 1)]) == 0


@pytest.mark.parametrize("cwd", ["../../../etc", "relative/dir", "/work/../etc", "/a/b/.."])
def test_a_relative_or_climbing_exec_cwd_is_a_usage_error_before_any_sandbox_is_touched(
    env: Path, capsys: pytest.CaptureFixture[str], cwd: str
) -> None:
    code = cli.main(["exec", "abc", "--cwd", cwd, "--", "true"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "absolute path" in err and len(_lines(err)) == 1


def test_events_into_a_closed_pipe_stops_with_one_line(env: Path) -> None:
    store = open_store(f"sqlite:///{env / 'sandbox.db'}")
    try:
        from sandbox_lifecycle.events.migrate import upgrade

        upgrade(f"sqlite:///{env / 'sandbox.db'}")
        # Far more than a pipe buffer holds, so the writer is still writing when the reader leaves.
        for version in range(0, 3000, 100):
            store.append("s", version, [event(n=i) for i in range(100)])
    finally:
        store.close()
    proc = subprocess.Popen(
        [SANDBOXCTL, "events", "--json"],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == cli.EXIT_USAGE
    proc.stderr.close()
    assert "broken pipe" in err and "Traceback" not in err and len(_lines(err)) == 1
