"""``service.preview``: a provider without a ``preview`` of its own (Docker, the fake) is previewed as its
URL with no header; one with (E2B: tests/unit/adapters/providers/e2b/test_preview.py) answers itself; the
checks are ``url``'s (ports, the port's range)."""

from __future__ import annotations

import pytest

from sandbox_lifecycle.core.errors import Unsupported
from sandbox_lifecycle.core.ports import ProviderCapabilities
from sandbox_lifecycle.core.preview import Preview
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import FakeProvider, InMemoryEventStore


def test_without_a_preview_of_its_own_the_url_alone_reaches_the_port() -> None:
    service = SandboxService(InMemoryEventStore(), FakeProvider())
    sid = service.create("data-app").id
    assert service.preview(sid, 8000) == Preview("http://127.0.0.1:8000")
    assert service.preview(sid, 8000).headers == {}
    assert service.preview(sid, 1).url == service.url(sid, 1)
    assert service.preview(sid, 65535).url == service.url(sid, 65535)
    for bad in (0, 65536, -1):
        with pytest.raises(ValueError, match="port must be 1-65535"):
            service.preview(sid, bad)


def test_a_provider_with_its_own_preview_answers_and_the_repr_hides_the_headers() -> None:
    class Guarded(FakeProvider):
        def preview(self, ref: str, port: int) -> Preview:
            return Preview(self.url(ref, port), {"x-token": "s3cret"})

    service = SandboxService(InMemoryEventStore(), Guarded())
    sid = service.create("data-app").id
    preview = service.preview(sid, 8000)
    assert preview.headers == {"x-token": "s3cret"} and "s3cret" not in repr(preview)


def test_a_provider_without_ports_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider()
    monkeypatch.setattr(provider, "capabilities", ProviderCapabilities("none", False, False, False))
    service = SandboxService(InMemoryEventStore(), provider)
    sid = service.create("data-app").id
    with pytest.raises(Unsupported) as refused:
        service.preview(sid, 8000)
    assert (refused.value.provider, refused.value.what) == (
        "fake",
        "reaching a port in the sandbox (preview)",
    )


def test_a_bad_port_is_refused_before_a_suspended_sandbox_is_resumed() -> None:
    service = SandboxService(InMemoryEventStore(), FakeProvider())
    sid = service.create("data-app").id
    service.suspend(sid)
    for bad in (0, 65536):
        with pytest.raises(ValueError, match="port must be 1-65535"):
            service.preview(sid, bad)
    assert service.get(sid).state == "suspended"
