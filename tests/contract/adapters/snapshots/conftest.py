"""The fixtures of this folder's tests, from tests.support.fixtures.snapshots."""

from tests.support.fixtures.snapshots import moto_endpoint, store  # noqa: F401
