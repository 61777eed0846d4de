"""The loopback S3 server of the snapshot tests, for the Docker scenario's snapshots."""

from tests.snapshots.conftest import moto_endpoint  # noqa: F401
