"""The gvisor provider's start-up refusal and doctor facts, on an engine double (no engine needed)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any
from unittest import mock

import docker
import pytest

from sandbox_lifecycle.adapters.composition.bootstrap import build_provider
from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.gvisor import runtime as gvisor_runtime
from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
from sandbox_lifecycle.adapters.providers.gvisor.runtime import (
    binary_version,
    doctor_check,
    preflight,
    runtime_status,
)
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.errors import ProviderError, ProviderRefused
from tests.conftest import DOCKER_IMAGES

RUNC_ONLY = {"runc": {"path": "runc"}, "io.containerd.runc.v2": {"path": "runc"}}
WITH_RUNSC = RUNC_ONLY | {"runsc": {"path": "/opt/gvisor/runsc", "runtimeArgs": ["--network=host"]}}


def engine(runtimes: dict[str, Any]) -> Any:
    client = mock.create_autospec(docker.DockerClient, instance=True)
    client.info.return_value = {"Runtimes": runtimes}
    return client


def test_an_engine_without_runsc_is_refused_with_how_to_install_and_register_it() -> None:
    with pytest.raises(ProviderRefused) as refused:
        preflight(engine(RUNC_ONLY))
    message = str(refused.value)
    for step in (
        "SANDBOX_PROVIDER=gvisor",
        "apt-get install runsc",
        '"runtimes"',
        "--network=host",
        "restart",
    ):
        assert step in message


def test_an_engine_with_runsc_passes_and_reports_it() -> None:
    client = engine(WITH_RUNSC)
    preflight(client)
    status = runtime_status(client)
    assert (status.present, status.path, status.args, status.fix) == (
        True,
        "/opt/gvisor/runsc",
        ("--network=host",),
        None,
    )
    assert status.version is None  # no such binary on this host
    assert "version unknown" in status.detail
    client.close.assert_not_called()  # a client handed in stays the caller's


def test_a_registration_without_the_network_flag_is_reported_with_the_fix() -> None:
    status = runtime_status(engine(RUNC_ONLY | {"runsc": {"path": "/usr/bin/runsc"}}))
    assert status.present and status.fix is not None and "--network=host" in status.fix
    assert not runtime_status(engine(RUNC_ONLY)).present


def test_an_unreachable_engine_is_a_provider_error_naming_what_to_do() -> None:
    with pytest.raises(ProviderError, match=r"unreachable.*DOCKER_HOST") as raised:
        preflight("unix:///nonexistent/engine.sock")
    assert not isinstance(raised.value, ProviderRefused)  # retryable: the engine may come back


@pytest.mark.skipif(not os.access("/usr/bin/runsc", os.X_OK), reason="runsc is not installed on this host")
def test_the_version_comes_from_the_registered_binary() -> None:
    assert (binary_version("/usr/bin/runsc") or "").startswith("runsc version ")
    assert binary_version("runsc") is None  # a bare name is the engine's PATH, not necessarily ours


def test_gvisor_is_allowed_in_production_and_docker_keeps_its_refusal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("NODE_ENV", "production")
    store = LocalSnapshotStore(tmp_path)
    with pytest.raises(ProviderRefused, match="NODE_ENV=production"):
        DockerProvider(DOCKER_IMAGES, store, environ={"NODE_ENV": "production"})
    provider = GVisorProvider(DOCKER_IMAGES, store)
    assert (provider.name, provider.capabilities.isolation) == ("gvisor", "gvisor")


def test_the_doctor_line_says_what_is_wrong_and_what_to_do() -> None:
    assert doctor_check(engine(WITH_RUNSC))[0] == "ok"
    status, detail, fix = doctor_check(engine(RUNC_ONLY))
    assert (status, fix is not None and "apt-get install runsc" in fix) == ("fail", True)
    assert "no 'runsc' runtime" in detail
    assert doctor_check(engine(RUNC_ONLY | {"runsc": {"path": "/usr/bin/runsc"}}))[0] == "warn"
    assert doctor_check("unix:///nonexistent/engine.sock")[0] == "fail"


def test_the_registry_builds_it_after_checking_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    env = {"SANDBOX_PROVIDER": "gvisor", "SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_DEPLOYMENT": "gvunit"}
    settings = Settings.from_env(env)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    with pytest.raises(ProviderError, match="unreachable"):
        build_provider(settings)
    monkeypatch.setattr(gvisor_runtime, "preflight", lambda: None)
    built = build_provider(settings)
    assert isinstance(built, GVisorProvider)
    assert (built.name, built.network.deployment) == ("gvisor", "gvunit")
    # Allowed in production, unlike the docker provider (whose refusal is unchanged).
    assert Settings.from_env({**env, "NODE_ENV": "production"}).provider == "gvisor"
    with pytest.raises(ProviderRefused, match="NODE_ENV=production"):
        Settings.from_env({**env, "SANDBOX_PROVIDER": "docker", "NODE_ENV": "production"})


def test_gvisor_can_do_everything_docker_can_and_only_its_isolation_differs() -> None:
    # Same containers, same archives: every suspend's snapshot stays restorable (rewind, fork).
    assert GVisorProvider.capabilities == dataclasses.replace(DockerProvider.capabilities, isolation="gvisor")
