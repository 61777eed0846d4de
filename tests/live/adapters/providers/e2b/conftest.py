"""The fixtures of this folder's tests, from tests.support.fixtures.e2b."""

from tests.support.fixtures.e2b import _no_e2b_env, fake_e2b, provider, settings  # noqa: F401
