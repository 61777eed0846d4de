"""The attack suites reuse the Docker fixtures (the engine, fresh sandbox ids and their clean-up)."""

from tests.support.fixtures.docker import docker_client, new_id  # noqa: F401
