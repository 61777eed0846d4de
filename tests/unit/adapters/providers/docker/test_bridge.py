"""The host's address on the default bridge, as a first-start engine reports it (issue M): no ``Gateway``
key until the engine is restarted after ``docker0`` exists."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sandbox_lifecycle.adapters.providers.docker.bridge import (
    BridgeAddressUnknown,
    bridge_host_address,
    interface_address,
)
from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.core.errors import ProviderRefused

NAME = "com.docker.network.bridge.name"

# What `docker network inspect bridge` says on a first start, with the loopback interface standing in for
# docker0 (every namespace has it, with 127.0.0.1 on it).
FIRST_START = {
    "IPAM": {"Config": [{"Subnet": "127.0.0.0/8"}]},
    "Options": {"com.docker.network.bridge.name": "lo"},
}
RESTARTED = {"IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}, "Options": {}}


def test_reported_gateway_is_used() -> None:
    assert bridge_host_address(RESTARTED) == "172.17.0.1"


def test_first_start_engine_reads_the_interface() -> None:
    assert bridge_host_address(FIRST_START) == "127.0.0.1"


def test_ipv6_config_is_skipped_for_the_ipv4_one() -> None:
    both = {
        "IPAM": {"Config": [{"Subnet": "fd00::/64", "Gateway": "fd00::1"}, *FIRST_START["IPAM"]["Config"]]}
    }
    assert bridge_host_address({**FIRST_START, **both}) == "127.0.0.1"


def test_missing_interface_is_a_clear_error() -> None:
    network = {
        "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]},
        "Options": {NAME: "nosuch0"},
    }
    with pytest.raises(BridgeAddressUnknown, match="no interface nosuch0"):
        bridge_host_address(network)


def test_interface_outside_the_subnet_is_not_taken() -> None:
    network = {
        "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]},
        "Options": {"com.docker.network.bridge.name": "lo"},
    }
    with pytest.raises(BridgeAddressUnknown, match="outside the default bridge"):
        bridge_host_address(network)


def test_interface_names_that_cannot_exist() -> None:
    assert interface_address("") is None
    assert interface_address("x" * 16) is None
    assert interface_address("lo") is not None


def _networks(bridge: dict[str, Any], upstream: str) -> SandboxNetworks:
    api = SimpleNamespace(inspect_network=lambda name: bridge)
    client = SimpleNamespace(api=api)
    settings = EgressSettings(upstream_url=upstream, api_key="k")
    return SandboxNetworks(lambda: client, "bridge-test", settings, "image")  # type: ignore[arg-type,return-value]


def test_loopback_upstream_on_a_first_start_engine() -> None:
    networks = _networks(FIRST_START, "http://127.0.0.1:8089/v1")
    assert networks._upstream_url() == "http://127.0.0.1:8089/v1"
    networks = _networks(RESTARTED, "http://localhost:8089")
    assert networks._upstream_url() == "http://172.17.0.1:8089"


def test_upstream_without_a_bridge_address_is_refused_clearly() -> None:
    gone = {
        "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]},
        "Options": {NAME: "nosuch0"},
    }
    with pytest.raises(ProviderRefused, match="ANTHROPIC_BASE_URL is a loopback URL"):
        _networks(gone, "http://127.0.0.1:8089")._upstream_url()


def test_public_upstream_needs_no_bridge() -> None:
    assert _networks({}, "https://api.anthropic.com")._upstream_url() == "https://api.anthropic.com"
