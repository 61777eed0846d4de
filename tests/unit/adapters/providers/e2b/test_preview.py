"""Ports of an E2B sandbox with public traffic off, through the real SDK against the loopback E2B server:
``preview`` gives the URL and the traffic access token header, ``url`` the URL alone; the token is a
secret (no repr, no log line, no CLI output unless asked); it survives a network update, a pause and a
resume; a sandbox made from a checkpoint has its own."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import sandbox_lifecycle.adapters.composition.bootstrap as bootstrap
import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.preview import Preview
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fake_e2b import FakeE2B
from tests.support.fakes import Clock, InMemoryEventStore

HEADER = "e2b-traffic-access-token"
POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=5))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(fake: FakeE2B, url: str, headers: dict[str, str]) -> int | bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": fake.proxy_url}))
    try:
        with opener.open(urllib.request.Request(url + "/index.html", headers=headers), timeout=5) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code


def serving(service: SandboxService, fake: FakeE2B, sid: str, port: int) -> Preview:
    """Start a web server in the sandbox and wait (bounded) until its preview answers."""
    service.write_file(sid, "index.html", b"hello\n")
    service.start(sid, ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"])
    preview = service.preview(sid, port)
    deadline = time.monotonic() + 10
    while fetch(fake, preview.url, dict(preview.headers)) != b"hello\n":
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.1)
    return preview


@pytest.fixture
def service(provider: E2BProvider) -> SandboxService:
    return SandboxService(InMemoryEventStore(), provider, policy=POLICY, clock=Clock())


def test_preview_carries_the_token_the_url_alone_is_refused(
    service: SandboxService, fake_e2b: FakeE2B, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sid = service.create(DATA_APP).id
    token = fake_e2b.sandbox(service.get(sid).provider_ref or "").traffic_token
    assert token
    preview = serving(service, fake_e2b, sid, _free_port())
    assert preview.headers == {HEADER: token}
    assert fetch(fake_e2b, preview.url, {}) == 403
    assert fetch(fake_e2b, preview.url, {HEADER: "not-the-token"}) == 403
    # url() is what it was: the same URL, a plain string.
    port = int(preview.url.split("//", 1)[1].split("-", 1)[0])
    assert service.url(sid, port) == preview.url
    # The token is a secret: no repr, no log line, no event.
    assert token not in repr(preview) and token not in caplog.text
    assert all(token not in repr(e) for e in service.history(sid))


def test_the_token_survives_an_egress_change_a_pause_and_a_resume(
    service: SandboxService, fake_e2b: FakeE2B
) -> None:
    sid = service.create(DATA_APP).id
    port = _free_port()
    before = serving(service, fake_e2b, sid, port)
    service.set_egress(sid, ["pkgs.test"], reason="pip install")
    service.suspend(sid)
    service.resume(sid)
    after = service.preview(sid, port)
    # E2B sets public traffic at create only: no update (which replaces the egress) or pause changes it.
    assert after == before
    assert fetch(fake_e2b, after.url, dict(after.headers)) == b"hello\n"
    assert fetch(fake_e2b, after.url, {}) == 403


def test_a_process_without_the_handle_connects_to_learn_the_token(
    provider: E2BProvider, settings: E2BSettings, fake_e2b: FakeE2B
) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    other = E2BProvider(settings)  # another replica: it has never seen the create's answer
    assert other.preview(ref, 8080).headers == {HEADER: fake_e2b.sandbox(ref).traffic_token}
    assert len(fake_e2b.requests("POST", r"/v2/sandboxes/[^/]+/connect")) == 1


def test_a_sandbox_made_from_a_checkpoint_has_its_own_token(settings: E2BSettings, fake_e2b: FakeE2B) -> None:
    on = E2BProvider(dataclasses.replace(settings, checkpoints=True))
    service = SandboxService(InMemoryEventStore(), on, policy=POLICY, clock=Clock())
    sid = service.create(DATA_APP).id
    first = service.preview(sid, 8080)
    service.suspend(sid)
    service.resume(sid)
    second = service.preview(sid, 8080)
    assert second.url != first.url and second.headers != first.headers
    assert second.headers == {HEADER: fake_e2b.sandbox(service.get(sid).provider_ref or "").traffic_token}


@pytest.fixture
def cli_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: E2BProvider
) -> Iterator[SandboxService]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setattr(bootstrap, "build_provider", lambda settings: provider)
    yield build_service(provider=provider)


def test_the_cli_prints_the_token_only_when_asked(
    cli_env: SandboxService, fake_e2b: FakeE2B, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = cli_env.create(DATA_APP).id
    token = fake_e2b.sandbox(cli_env.get(sid).provider_ref or "").traffic_token or ""
    assert cli.main(["url", sid, "8080"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == cli_env.url(sid, 8080)
    assert token not in out + err and "--show-token" in err
    assert cli.main(["url", sid, "8080", "--show-token"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines() == [cli_env.url(sid, 8080), f"{HEADER}: {token}"]
