"""Fixtures: the loopback fake of E2B and a provider pointed at it through the real SDK."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from tests.e2b.fake_e2b import FakeE2B

API_KEY = "e2b_test_key_0123456789"
# A value that must reach the sandbox and nothing else: no record, no log line, no message.
AGENT_SECRET = "sk-ant-secret-must-not-leak-42"


@pytest.fixture(autouse=True)
def _no_e2b_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The SDK reads E2B_* variables of the process; none of them may steer an offline test."""
    if request.node.get_closest_marker("e2b_live"):
        return
    for name in ("E2B_DEBUG", "E2B_HTTP_VERSION", "E2B_DOMAIN", "E2B_API_URL", "E2B_SANDBOX_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_e2b(tmp_path: Path) -> Iterator[FakeE2B]:
    fake = FakeE2B(API_KEY, tmp_path / "e2b")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def fake_env(fake: FakeE2B) -> dict[str, str]:
    """The environment a deployment would set, pointing the SDK at the fake."""
    return {
        "E2B_API_KEY": API_KEY,
        "E2B_API_URL": fake.url,
        "E2B_SANDBOX_URL": fake.url,
        # get_host names <port>-<id>.<this domain>, which the fake's port proxy routes.
        "E2B_DOMAIN": FakeE2B.domain,
        "E2B_TEMPLATE_TAG": "v1",
        "E2B_AI_WRITEBACK_TEMPLATE_TAG": "v2",
        "ANTHROPIC_API_KEY": AGENT_SECRET,
    }


@pytest.fixture
def settings(fake_e2b: FakeE2B) -> E2BSettings:
    # Short backoff and request timeout keep the fault tests fast; the retry count stays the default.
    return dataclasses.replace(
        E2BSettings.from_env(fake_env(fake_e2b)),
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        request_timeout=1.0,
    )


@pytest.fixture
def provider(settings: E2BSettings) -> E2BProvider:
    return E2BProvider(settings)
