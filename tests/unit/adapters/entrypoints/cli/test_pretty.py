"""rich output at a terminal: tables, the history timeline, progress bars; never in --json or in pipes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import sandbox_lifecycle.adapters.composition.bootstrap as bootstrap
import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
import sandbox_lifecycle.adapters.entrypoints.cli.pretty as pretty
import sandbox_lifecycle.adapters.entrypoints.cli.render as render
from sandbox_lifecycle.adapters.observability import progress
from sandbox_lifecycle.adapters.providers.tree import TransferCounter, extract_stream, pack_dir
from tests.support.fakes import FakeProvider


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "docker")
    fake = FakeProvider()
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: fake)
    return fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def created(capsys: pytest.CaptureFixture[str]) -> str:
    code, out, _ = run(capsys, "create", "--kind", "data-app", "--conversation", "c1", "--json")
    assert code == 0
    return str(json.loads(out)["id"])


@pytest.mark.usefixtures("provider")
def test_a_terminal_gets_tables_and_a_timeline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = created(capsys)
    assert run(capsys, "suspend", sid)[0] == 0
    plain_ls = run(capsys, "ls")[1]
    monkeypatch.setattr(render, "for_a_person", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")  # rich's width for a terminal it cannot measure
    _, table, _ = run(capsys, "ls")
    assert table != plain_ls
    assert "LAST ACTIVITY" in table and sid in table and "suspended" in table
    _, shown, _ = run(capsys, "show", sid)
    assert "conversation_id" in shown and "c1" in shown
    _, timeline, _ = run(capsys, "history", sid)
    lines = [line for line in timeline.splitlines() if line.strip()]
    assert "FROM → TO" in lines[0]
    assert any(line.startswith("●") and "new → creating" in line for line in lines)
    last = next(line for line in lines if "suspending → suspended" in line)
    assert last.startswith("●") and "Suspended" in last and "s " in last


@pytest.mark.usefixtures("provider")
def test_json_is_the_same_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = created(capsys)
    piped = [
        run(capsys, *argv)[1]
        for argv in (("ls", "--json"), ("show", sid, "--json"), ("history", sid, "--json"))
    ]
    monkeypatch.setattr(render, "for_a_person", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    at_tty = [
        run(capsys, *argv)[1]
        for argv in (("ls", "--json"), ("show", sid, "--json"), ("history", sid, "--json"))
    ]
    assert at_tty == piped
    assert isinstance(json.loads(at_tty[0]), list)


def test_transfers_report_their_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "b.txt").write_bytes(b"b" * 1234)
    moved: list[int] = []
    with progress.reporting(moved.append):
        chunks = list(pack_dir(str(src), TransferCounter(), owner=(os.getuid(), os.getgid())))
    assert sum(moved) == 301_234
    moved.clear()
    with progress.reporting(moved.append):
        extract_stream(iter(chunks), str(tmp_path / "dst"), top=None)
    assert sum(moved) == 301_234
    progress.advance(5)  # outside a reporting block: nobody is told, nothing fails


def test_cp_at_a_terminal_shows_a_bar_with_the_upload_size(
    provider: FakeProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sid = created(capsys)
    src = tmp_path / "app"
    src.mkdir()
    (src / "x.bin").write_bytes(b"x" * 50_000)
    bars: list[tuple[str, int | None, list[int]]] = []

    @contextmanager
    def recording_bar(label: str, total: int | None) -> Iterator[None]:
        moved: list[int] = []
        bars.append((label, total, moved))
        with progress.reporting(moved.append):
            yield

    monkeypatch.setattr(pretty, "bar", recording_bar)
    assert run(capsys, "cp", str(src), f"{sid}:in")[0] == 0
    assert bars == []  # stderr is not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run(capsys, "cp", str(src), f"{sid}:in2")[0] == 0
    assert run(capsys, "cp", f"{sid}:in2", str(tmp_path / "back"))[0] == 0
    (up_label, up_total, up_moved), (_, down_total, down_moved) = bars
    assert up_label.endswith(f"{sid}:in2") and up_total == 50_000 and sum(up_moved) >= 50_000
    assert down_total is None and sum(down_moved) == 50_000
    assert (tmp_path / "back" / "x.bin").read_bytes() == b"x" * 50_000
