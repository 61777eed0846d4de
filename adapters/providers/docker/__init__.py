"""The Docker provider: a container per sandbox on the local engine, behind a per-deployment egress point.

``PROVIDER`` is its registry entry (see ``adapters.providers.registry``): chosen by
``SANDBOX_PROVIDER=docker``, refused under ``NODE_ENV=production``. This module and ``settings`` stay
stdlib-only, for every command imports them; the docker SDK loads with ``provider`` when one is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox_lifecycle.adapters.composition.environ import EnvReader, Shared
from sandbox_lifecycle.adapters.providers.docker.settings import (
    DockerSettings,
    docker_settings,
    refuse_production,
)
from sandbox_lifecycle.adapters.providers.registry import Host, ProviderEntry

if TYPE_CHECKING:
    from sandbox_lifecycle.core.ports import SandboxProvider


class DockerEntry(ProviderEntry[DockerSettings]):
    name = "docker"
    extra = "docker"
    library = "docker"
    label = "Docker engine"
    unreachable_fix = (
        "start the Docker engine (or point DOCKER_HOST at one) and make sure this user may use it"
    )
    doctor = "doctor"

    def parse(self, reader: EnvReader, shared: Shared) -> DockerSettings:
        return docker_settings(reader, shared)

    def refuse(self, own: DockerSettings) -> None:
        refuse_production(own.node_env)

    def build(self, own: DockerSettings, host: Host) -> SandboxProvider:
        # Here, not at the top: the provider brings the docker SDK (80 ms measured), which every command
        # would pay for by importing this registry entry.
        from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider

        return DockerProvider(
            own.images,
            host.snapshot_store(),
            environ={"NODE_ENV": own.node_env},
            deployment=host.deployment,
            disk_limit_mb=own.disk_limit_mb,
            egress=own.egress,
            pieces=own.pieces,
        )


PROVIDER = DockerEntry()
