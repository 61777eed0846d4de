"""This host's address on the engine's default bridge: where the egress container reaches a model server
or a git server that runs on the host, and where such a server must listen.

An engine reports ``IPAM.Config[0].Gateway`` for its default bridge only when it was configured or
restarted after ``docker0`` existed: on a first start the engine picks the address itself and reports just
``{"Subnet": ...}``. So the key is a hint, never a requirement: without it, the address is read from the
bridge interface itself (``com.docker.network.bridge.name``, ``docker0`` by default) in this process's
network namespace, and it must lie in the bridge's subnet, so an unrelated interface of the same name is
never taken for it.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Mapping
from typing import Any

DEFAULT_BRIDGE = "bridge"
_BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
_DEFAULT_INTERFACE = "docker0"
_SIOCGIFADDR = 0x8915  # <linux/sockios.h>: an interface's IPv4 address
_IFNAMSIZ = 16


class BridgeAddressUnknown(LookupError):
    """The host's address on the default bridge cannot be found; the message says what to check."""


def bridge_host_address(network: Mapping[str, Any]) -> str:
    """The host's IPv4 address on a bridge network, from the engine's inspection of it (``docker network
    inspect bridge``) and, when the engine does not report it, from the interface."""
    configs = [c for c in ((network.get("IPAM") or {}).get("Config") or []) if ":" not in c.get("Subnet", "")]
    for config in configs:
        if config.get("Gateway"):
            return str(ipaddress.IPv4Address(str(config["Gateway"]).split("/")[0]))
    interface = str((network.get("Options") or {}).get(_BRIDGE_NAME_OPTION) or _DEFAULT_INTERFACE)
    subnets = [ipaddress.IPv4Network(c["Subnet"], strict=False) for c in configs if c.get("Subnet")]
    found = interface_address(interface)
    if found is None:
        raise BridgeAddressUnknown(
            f"the engine reports no gateway for its default bridge and this host has no interface "
            f"{interface} with an IPv4 address: the engine is not on this host or in this network "
            "namespace, and sandboxes cannot reach a server here (run the backend beside the engine)"
        )
    if subnets and not any(found in subnet for subnet in subnets):
        raise BridgeAddressUnknown(
            f"interface {interface} has {found}, outside the default bridge's "
            f"{', '.join(map(str, subnets))}: this is not the engine's bridge (is DOCKER_HOST another "
            "engine's, or in another network namespace?)"
        )
    return str(found)


def interface_address(name: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of a network interface of this namespace, or None when it has none."""
    if not name or len(name.encode()) >= _IFNAMSIZ:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError:  # no such interface, or no IPv4 address on it
            return None
    return ipaddress.IPv4Address(reply[20:24])


def docker_host_address() -> str:
    """The host's address on the default bridge of the engine the environment names (``DOCKER_HOST``):
    where a server on this host that Docker sandboxes reach through their egress point must listen."""
    import docker  # the docker extra; loaded by the one caller that needs the engine

    client = docker.from_env()
    try:
        return bridge_host_address(client.api.inspect_network(DEFAULT_BRIDGE))
    finally:
        client.close()
