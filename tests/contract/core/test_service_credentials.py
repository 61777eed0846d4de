"""set_credentials through the service, on the fake provider and every event store: the log records each
use (host, header names, who, why) and never a value; refused hosts or headers record and keep nothing;
a turn can set them; they outlive a suspend and go with a destroy."""

from __future__ import annotations

import asyncio
import json

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.async_service import AsyncSandboxService
from sandbox_lifecycle.core.errors import CredentialsRefused, ProviderError, SandboxExpired, SandboxNotFound
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.service import SandboxService
from tests.contract.core.test_service import POLICY
from tests.support.fakes import Clock, FakeProvider

SECRET = "Bearer PLANTED-credential-0123456789abcdef"


@pytest.fixture
def service(store: EventStore, provider: FakeProvider) -> SandboxService:
    return SandboxService(store, provider, policy=POLICY, clock=Clock())


def _uses(service: SandboxService, sid: str) -> list[tuple[object, object, str, str]]:
    return [
        (h.data.get("host"), h.data.get("headers"), h.actor, h.reason)
        for h in service.history(sid)
        if h.type == "CredentialsSet"
    ]


def _log_text(service: SandboxService, sid: str) -> str:
    return json.dumps([e.data for e in service.events(sandbox_id=sid)], default=str) + repr(
        service.history(sid)
    )


def test_each_use_is_recorded_by_header_names_and_the_values_stay_with_the_provider(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app").id
    row = service.set_credentials(
        sid, "API.service.test", {"Authorization": SECRET}, reason="call the service", actor="agent-7"
    )
    assert row.state == lc.IDLE
    service.set_credentials(sid, "api.service.test", {"Authorization": SECRET}, actor="agent-7")
    service.set_credentials(sid, "api.service.test", {}, reason="done", actor="agent-7")
    assert _uses(service, sid) == [
        ("api.service.test", ["Authorization"], "agent-7", "call the service"),
        ("api.service.test", ["Authorization"], "agent-7", "user"),  # every call is a use
        ("api.service.test", [], "agent-7", "done"),
    ]
    assert provider.credentials[sid] == {}
    service.set_credentials(sid, "x.pkgs.test:443", {"X-Token": SECRET})
    assert provider.credentials[sid] == {"x.pkgs.test": {"X-Token": SECRET}}
    assert SECRET not in _log_text(service, sid)
    assert "PLANTED" not in _log_text(service, sid)


@pytest.mark.parametrize(
    ("host", "headers", "why"),
    [
        ("other.test", {"Authorization": "x"}, "allow-list"),  # not allowed for the kind
        ("api.service.test:8443", {"Authorization": "x"}, "allow-list"),  # allowed on 80/443 only
        ("api.service.test", {"Host": "evil.test"}, "sets it itself"),
        ("api.service.test", {"Authorization": "a\r\nX-Evil: 1"}, "no CR, LF"),
        ("api.service.test", {"Bad Name": "x"}, "not an HTTP token"),
        ("api.service.test", {"A": "1", "a": "2"}, "twice"),
        ("api.service.test", {"A": ""}, "visible ASCII"),
        ("a b", {"A": "1"}, "not a host"),
    ],
)
def test_a_refused_host_or_header_records_and_keeps_nothing(
    service: SandboxService, provider: FakeProvider, host: str, headers: dict[str, str], why: str
) -> None:
    sid = service.create("data-app").id
    version = service.get(sid).version
    with pytest.raises(CredentialsRefused, match=why) as refused:
        service.set_credentials(sid, host, {**headers, "X-Secret": SECRET})
    assert "PLANTED" not in str(refused.value)
    assert refused.value.sandbox == sid and str(refused.value).startswith(
        f"credentials of sandbox {sid} not set: "
    )
    assert service.get(sid).version == version
    assert sid not in provider.credentials


def test_an_allow_list_set_on_the_sandbox_is_the_one_checked(service: SandboxService) -> None:
    sid = service.create("data-app").id
    service.set_egress(sid, ["opened.test"])
    service.set_credentials(sid, "opened.test", {"Authorization": SECRET})
    with pytest.raises(CredentialsRefused, match="allow-list"):
        service.set_credentials(sid, "api.service.test", {"Authorization": SECRET})


def test_a_turn_sets_them_before_its_code_runs_and_they_outlive_the_suspend(
    service: SandboxService, provider: FakeProvider
) -> None:
    with service.turn("conv-c", "data-app", credentials={"api.service.test": {"X-Key": SECRET}}) as sbx:
        assert provider.credentials[sbx.id] == {"api.service.test": {"X-Key": SECRET}}
        sid = sbx.id
    assert service.get(sid).state == lc.SUSPENDED
    assert _uses(service, sid) == [("api.service.test", ["X-Key"], "api", "turn_start")]
    service.set_credentials(sid, "api.service.test", {"X-Key": SECRET}, reason="while suspended")
    assert provider.credentials[sid]
    service.destroy(sid)
    assert sid not in provider.credentials
    with pytest.raises(SandboxExpired):
        service.set_credentials(sid, "api.service.test", {"X-Key": SECRET})


def test_a_turn_with_a_refused_credential_still_ends(service: SandboxService) -> None:
    with (
        pytest.raises(CredentialsRefused),
        service.turn("conv-r", "data-app", credentials={"other.test": {"X-Key": SECRET}}),
    ):
        pytest.fail("the turn's code must not run")
    row = service.store.find_live("conv-r", "data-app")
    assert row is not None and row.state != lc.RUNNING


def test_a_failed_keep_after_the_record_is_made_good_by_calling_again(
    service: SandboxService, provider: FakeProvider
) -> None:
    sid = service.create("data-app").id
    provider.fail["set_credentials"] = ProviderError("state dir unwritable")
    with pytest.raises(ProviderError):
        service.set_credentials(sid, "api.service.test", {"X-Key": SECRET})
    service.set_credentials(sid, "api.service.test", {"X-Key": SECRET})
    assert provider.credentials[sid] == {"api.service.test": {"X-Key": SECRET}}
    assert len(_uses(service, sid)) == 2


def test_the_async_service_sets_them_too(service: SandboxService, provider: FakeProvider) -> None:
    sid = service.create("data-app").id

    async def go() -> None:
        svc = AsyncSandboxService(service)
        await svc.set_credentials(sid, "api.service.test", {"X-Key": SECRET}, actor="async")
        async with svc.turn("conv-a", "data-app", credentials={"api.service.test": {"X-A": SECRET}}) as sbx:
            assert provider.credentials[sbx.id] == {"api.service.test": {"X-A": SECRET}}

    asyncio.run(go())
    assert _uses(service, sid) == [("api.service.test", ["X-Key"], "async", "user")]


def test_an_unknown_sandbox_is_not_found_and_nothing_is_kept(
    service: SandboxService, provider: FakeProvider
) -> None:
    with pytest.raises(SandboxNotFound):
        service.set_credentials("no-such-sandbox", "api.service.test", {"X-Key": SECRET})
    assert provider.credentials == {}
    assert not [c for c in provider.calls if c[0] == "set_credentials"]


def test_a_turn_s_handle_sets_them_and_says_whether_the_egress_point_adds_them(
    service: SandboxService, provider: FakeProvider
) -> None:
    with service.turn("conv-h", "data-app") as sbx:
        sbx.set_credentials("api.service.test", {"X-Key": SECRET}, reason="step")
        assert provider.credentials[sbx.id] == {"api.service.test": {"X-Key": SECRET}}
        assert sbx.egress_credentials is provider.capabilities.egress_credentials
        sid = sbx.id
    assert _uses(service, sid) == [("api.service.test", ["X-Key"], "api", "step")]
