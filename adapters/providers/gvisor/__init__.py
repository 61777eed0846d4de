"""The gVisor provider: the Docker provider's sandboxes under gVisor's ``runsc`` runtime, for self-hosted
production (docs/gvisor.md).

``PROVIDER`` is its registry entry: chosen by ``SANDBOX_PROVIDER=gvisor``, allowed under
``NODE_ENV=production`` (a runsc sandbox does not share the host kernel), and refused before anything is
written when the engine has no ``runsc`` runtime. It reads the Docker provider's variables (images, disk
limit, egress) with the Docker folder's parser. Stdlib-only at import, as every entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox_lifecycle.adapters.composition.environ import EnvReader, Shared
from sandbox_lifecycle.adapters.providers.docker.settings import DockerSettings, docker_settings
from sandbox_lifecycle.adapters.providers.registry import Host, ProviderEntry

if TYPE_CHECKING:
    from sandbox_lifecycle.core.ports import SandboxProvider


class GVisorEntry(ProviderEntry[DockerSettings]):
    name = "gvisor"
    extra = "docker"
    library = "docker"
    label = "Docker engine (runsc runtime)"
    unreachable_fix = (
        "start the Docker engine (or point DOCKER_HOST at one) and make sure this user may use it"
    )
    doctor = "doctor"

    def parse(self, reader: EnvReader, shared: Shared) -> DockerSettings:
        # The same variables as the Docker provider's; a bad one is reported once (EnvReader.bad).
        return docker_settings(reader, shared)

    def build(self, own: DockerSettings, host: Host) -> SandboxProvider:
        # Here, not at the top: the provider brings the docker SDK, which every command would pay for.
        from sandbox_lifecycle.adapters.providers.gvisor.provider import GVisorProvider
        from sandbox_lifecycle.adapters.providers.gvisor.runtime import preflight

        preflight()  # ProviderRefused naming how to install and register runsc, before a write
        return GVisorProvider(
            own.images,
            host.snapshot_store(),
            deployment=host.deployment,
            disk_limit_mb=own.disk_limit_mb,
            egress=own.egress,
            pieces=own.pieces,
        )


PROVIDER = GVisorEntry()
