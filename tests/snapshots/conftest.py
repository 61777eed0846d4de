"""Fixtures for the snapshot stores: a moto S3 server on loopback, started and stopped by the tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# moto reads this when it is imported; real S3's 5 MiB minimum would make multipart tests slow.
os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", "256")

from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore
from tests.conftest import require_marker

# Small parts so a few hundred KiB already exercise multipart uploads.
PART_SIZE = 64 * 1024
SECRET = "s3cr3t-Never-Shown-9f2b"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    import moto.s3.models
    from moto.server import ThreadedMotoServer

    # In case moto was imported before the variable above was set.
    moto.s3.models.S3_UPLOAD_PART_MIN_SIZE = 256  # type: ignore[attr-defined]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def make_s3_store(endpoint: str, **kwargs: object) -> S3SnapshotStore:
    store = S3SnapshotStore(
        f"snap-{uuid.uuid4().hex[:12]}",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key="testing",
        secret_key=SECRET,
        part_size=PART_SIZE,
        **kwargs,  # type: ignore[arg-type]
    )
    store.ensure_bucket()
    return store


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LocalSnapshotStore | S3SnapshotStore:
    if request.param == "local":
        return LocalSnapshotStore(tmp_path / "snapshots")
    require_marker(request, "s3")
    return make_s3_store(request.getfixturevalue("moto_endpoint"))
