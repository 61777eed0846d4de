"""The fixtures of this folder's tests, from tests.support.fixtures.agent and .providers."""

from tests.support.fixtures.agent import host_claude, model  # noqa: F401
from tests.support.fixtures.providers import docker_client, e2b_env, fake_e2b, harness  # noqa: F401
