"""The loopback S3 server of the snapshot tests, for the Docker scenario's snapshots."""

from tests.support.fixtures.snapshots import moto_endpoint  # noqa: F401
