"""A console over a real SQLite log written by the service with the fake provider."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # Starlette's TestClient asks for httpx2; httpx (which the examples use) still works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.console import create_app
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import FakeProvider

LOOPBACK = ("127.0.0.1", 50123)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxService]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    svc = build_service(provider=FakeProvider())
    yield svc
    svc.store.close()  # type: ignore[attr-defined]


def client_of(service: SandboxService, **options: Any) -> TestClient:
    return TestClient(create_app(service, **options), client=LOOPBACK)


@pytest.fixture
def client(service: SandboxService) -> TestClient:
    return client_of(service)
