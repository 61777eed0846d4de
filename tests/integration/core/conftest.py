"""The fixtures of this folder's tests, from tests.support.fixtures.providers."""

from tests.support.fixtures.providers import e2b_env, fake_e2b  # noqa: F401
