"""`--json` rows are written by orjson in the json module's indented layout, as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sandbox_lifecycle.adapters.entrypoints.cli.render import print_row, print_rows, row_json
from sandbox_lifecycle.events.records import SandboxRow

ROW = SandboxRow(
    id="0123456789abcdef",
    kind="data-app",
    provider="docker",
    state="idle",
    version=2,
    conversation_id="c-1",
    provider_ref=None,
    snapshot_key=None,
    snapshot_sha256=None,
    snapshot_bytes=12,
    last_activity_at=datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC),
    state_since=datetime(2026, 1, 31, 12, 0, tzinfo=UTC),
    created_at=datetime(2026, 1, 31, 11, 59, tzinfo=UTC),
)


def test_rows_print_as_the_json_module_would(capsys: pytest.CaptureFixture[str]) -> None:
    print_rows([ROW, ROW], as_json=True)
    assert capsys.readouterr().out == json.dumps([row_json(ROW), row_json(ROW)], indent=2) + "\n"
    print_rows([], as_json=True)
    assert capsys.readouterr().out == "[]\n"
    print_row(ROW, as_json=True)
    out = capsys.readouterr().out
    assert out == json.dumps(row_json(ROW), indent=2) + "\n"
    assert json.loads(out)["last_activity_at"] == "2026-01-31T12:00:00.123456+00:00"
