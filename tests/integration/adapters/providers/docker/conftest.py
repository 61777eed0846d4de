"""The fixtures of this folder's tests, from tests.support.fixtures.docker."""

from tests.support.fixtures.docker import docker_client, either_provider, new_id, provider, store  # noqa: F401
