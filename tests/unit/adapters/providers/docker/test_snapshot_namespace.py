"""Each deployment sees the snapshot store through its own prefix, under the keys it always used."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandbox_lifecycle.adapters.providers.docker.snapshot_namespace import NamespacedStore
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore


def test_two_deployments_share_a_store_without_seeing_each_other(tmp_path: Path) -> None:
    shared = LocalSnapshotStore(tmp_path)
    staging, production = NamespacedStore(shared, "staging"), NamespacedStore(shared, "production")
    info = staging.put("snapshots/sbx/1.tar.zst", io.BytesIO(b"staging's"))
    production.put("snapshots/sbx/1.tar.zst", io.BytesIO(b"production's"))

    assert info.key == "snapshots/sbx/1.tar.zst"  # the caller's key, not the stored one
    assert (tmp_path / "staging" / "snapshots" / "sbx" / "1.tar.zst").read_bytes() == b"staging's"
    assert list(staging.keys("snapshots/")) == ["snapshots/sbx/1.tar.zst"]
    with staging.open("snapshots/sbx/1.tar.zst") as stored:
        assert stored.read() == b"staging's"
    assert staging.stat("snapshots/sbx/1.tar.zst") == len(b"staging's")

    staging.delete("snapshots/sbx/1.tar.zst")
    assert list(staging.keys()) == [] and staging.stat("snapshots/sbx/1.tar.zst") is None
    assert list(production.keys()) == ["snapshots/sbx/1.tar.zst"]
    assert staging.remove_stale_uploads(datetime.now(UTC) + timedelta(hours=1)) == []
