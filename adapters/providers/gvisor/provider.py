"""SandboxProvider on a Docker engine whose sandboxes run under gVisor's ``runsc`` runtime.

Everything is the Docker provider's (containers, home disks, the egress point and gateway, url(port),
snapshots as tar archives of the home); only the runtime differs. runsc puts a user-space kernel between
the sandbox and the host kernel, so a kernel bug reachable from a container is not one reachable from the
sandbox: that is why this provider, unlike ``docker``, is allowed with NODE_ENV=production. The engine's
socket stays root-equivalent on its host (docs/gvisor.md says where to place the backend and the engine).

The egress container and the port forwarders stay on the engine's default runtime: they run our own
code, never the sandbox's, and gVisor would only slow every proxied byte.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING

from sandbox_lifecycle.adapters.providers.docker.containers import DockerLimits
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings, PieceSettings
from sandbox_lifecycle.adapters.providers.gvisor.runtime import RUNTIME
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.ports import ProviderCapabilities, SnapshotStore

if TYPE_CHECKING:
    import docker

_REMOVE_ATTEMPTS = 3
_REMOVE_RETRY_DELAY_S = 0.2


class GVisorProvider(DockerProvider):
    name = "gvisor"
    # As the Docker provider's, but the sandbox's kernel is gVisor's, not the host's. runsc has no
    # checkpoint in the network mode it runs in here, so a suspend still ends the sandbox's processes.
    # Every suspend writes its own archive, as on docker, so any of them can be restored (rewind, fork).
    capabilities = ProviderCapabilities(
        isolation="gvisor",
        pause_keeps_processes=False,
        egress_allow_list=True,
        ports=True,
        egress_credentials=True,  # the Docker provider's egress point: credentials added there
        checkpoints=True,
    )

    def __init__(
        self,
        images: Mapping[str, str],
        snapshots: SnapshotStore,
        *,
        client: docker.DockerClient | None = None,
        limits: DockerLimits | None = None,
        deployment: str = "default",
        disk_limit_mb: int = 10240,
        disk_dir: str | os.PathLike[str] | None = None,
        egress: EgressSettings | None = None,
        pieces: PieceSettings | None = None,
    ) -> None:
        super().__init__(
            images,
            snapshots,
            client=client,
            # The Docker provider reads the environment only for its NODE_ENV=production refusal, which
            # exists because a plain container shares the host kernel; a runsc sandbox does not.
            environ={},
            limits=limits,
            deployment=deployment,
            disk_limit_mb=disk_limit_mb,
            disk_dir=disk_dir,
            egress=egress,
            runtime=RUNTIME,
            pieces=pieces,
        )

    def _remove(self, ref: str, sandbox_id: str) -> None:
        # A suspend removes the sandbox frozen (its archive stored). The engine's kill cannot reach a
        # frozen runsc sandbox: the removal then took 10 s here, against 0.3 s thawed first, and now
        # and then (2 in 10) failed with its init "a zombie" it can not kill (the next removal works).
        # Thawed, its processes run for the moment the removal takes; the archive is already stored.
        with suppress(ProviderError), self._containers.errors(f"thaw container {ref[:12]}", ref):
            if self.client.api.inspect_container(ref)["State"].get("Paused"):
                self.client.api.unpause(ref)
        for attempt in range(_REMOVE_ATTEMPTS):
            try:
                super()._remove(ref, sandbox_id)
                return
            except ProviderError as exc:
                if "is zombie" not in str(exc) or attempt == _REMOVE_ATTEMPTS - 1:
                    raise
                time.sleep(_REMOVE_RETRY_DELAY_S)
