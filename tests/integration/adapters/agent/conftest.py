"""The fixtures of this folder's tests, from tests.support.fixtures.agent."""

from tests.support.fixtures.agent import host_claude, model  # noqa: F401
