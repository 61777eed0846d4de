"""The standard-library reader of the sandboxes table returns what the SQLAlchemy store returns."""

from __future__ import annotations

from pathlib import Path

from sandbox_lifecycle.adapters.bootstrap import build_service
from sandbox_lifecycle.events.rows import SqliteRows
from tests.fakes import FakeProvider


def test_rows_match_the_store_in_every_state(tmp_path: Path) -> None:
    service = build_service(
        {"SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_PROVIDER": "docker"}, provider=FakeProvider()
    )
    idle = service.create("data-app", "conv-1")
    suspended = service.create("ai-writeback", None)
    service.write_file(suspended.id, "x.txt", b"12345")
    service.suspend(suspended.id)
    gone = service.create("data-app", "conv-3")
    service.destroy(gone.id)
    service.touch(idle.id)

    rows = SqliteRows(tmp_path / "sandbox.db")
    try:
        expected = service.store.list_sandboxes()
        assert len(expected) == 3
        assert rows.list_sandboxes() == expected
        for state in ("idle", "suspended", "expired", "running"):
            assert rows.list_sandboxes(state) == service.store.list_sandboxes(state)
        for row in expected:
            assert rows.get_sandbox(row.id) == row
        assert rows.get_sandbox("0000000000000000") is None
        # Types, not only equality: aware UTC times, ints.
        got = rows.get_sandbox(suspended.id)
        assert got is not None and got.snapshot_bytes and got.created_at.utcoffset() is not None
    finally:
        rows.close()
