"""SandboxProvider on a local Docker engine: one hardened container per sandbox, snapshots in a SnapshotStore.

For development and self-hosting only. The Docker socket is root-equivalent and a container shares the
host kernel, so this provider is not an isolation boundary for untrusted code; it refuses to start under
NODE_ENV=production (use SANDBOX_PROVIDER=e2b there).

Containers are named ``sbx-<sandbox id>`` and labelled with the sandbox id, kind and deployment, so every
operation is idempotent by name and the reconciler can find what we own (see containers.py, which also
holds the ownership check every call makes first). The root filesystem is read-only; the home directory
is an anonymous volume (seeded from the image, removed with the container) holding a filesystem of its
own with a hard size (``disk_limit_mb``, see disks.py), /tmp a tmpfs.

This module holds the lifecycle (create, suspend, resume, destroy) and what the reconciler lists; the
calls inside a running sandbox are its neighbours': exec.py, files.py, processes.py, and the suspend's
archive is snapshot.py.

Several deployments (two data dirs, staging and production) may share one engine and one snapshot store;
each lists, and so reconciles, only the containers labelled with its own deployment and the snapshots
under its own ``<deployment>/`` prefix of the store (snapshot_namespace.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox_lifecycle.adapters.composition.environ import DEPLOYMENT_NAME
from sandbox_lifecycle.adapters.egress.bookkeeping import forget_run
from sandbox_lifecycle.adapters.providers.delegating import DelegatingCalls
from sandbox_lifecycle.adapters.providers.docker.checkpoints import LABEL_BASE, DockerCheckpoints
from sandbox_lifecycle.adapters.providers.docker.containers import (
    LABEL_DEPLOYMENT,
    LABEL_DISK,
    LABEL_ID,
    LABEL_KIND,
    LABEL_MANAGED,
    SANDBOX_GID,
    SANDBOX_UID,
    SANDBOX_USER,
    Containers,
    DockerLimits,
    labels_of,
)
from sandbox_lifecycle.adapters.providers.docker.disks import DEFAULT_DISK_DIR, Disks
from sandbox_lifecycle.adapters.providers.docker.errors import is_enospc, mapped
from sandbox_lifecycle.adapters.providers.docker.exec import ContainerExec
from sandbox_lifecycle.adapters.providers.docker.files import DockerFiles
from sandbox_lifecycle.adapters.providers.docker.processes import DockerProcesses
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings, PieceSettings
from sandbox_lifecycle.adapters.providers.docker.settings import refuse_production as _refuse_production
from sandbox_lifecycle.adapters.providers.docker.snapshot import frozen, store_snapshot
from sandbox_lifecycle.adapters.providers.docker.snapshot_namespace import NamespacedStore
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost, ProviderRefused
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME, kind_spec
from sandbox_lifecycle.core.ports import (
    ProviderCapabilities,
    ProviderInstance,
    SnapshotInfo,
    SnapshotStore,
)

if TYPE_CHECKING:
    import docker

    from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks
    from sandbox_lifecycle.core.usage import Usage

log = logging.getLogger("sandbox_lifecycle")

# Where the provider's users have always imported them from.
__all__ = [
    "DEFAULT_DISK_DIR",
    "LABEL_DEPLOYMENT",
    "LABEL_DISK",
    "LABEL_ID",
    "LABEL_KIND",
    "LABEL_MANAGED",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "SANDBOX_USER",
    "DockerLimits",
    "DockerProvider",
    "refuse_production",
]

# Which script builds the image of each kind, for the "image missing" message.
_BUILD_SCRIPTS = {
    DATA_APP: "sandboxes/data-apps/build-local-image.sh",
    AI_WRITEBACK: "sandboxes/ai-writeback/build-local-image.sh",
}
# How long a create that lost the name to a concurrent one waits for that container to be inspectable.
_CONCURRENT_CREATE_WAIT_S = 10.0


def refuse_production(environ: Mapping[str, str]) -> None:
    """Raise ProviderRefused under NODE_ENV=production (Settings checks it before anything is built)."""
    _refuse_production(environ.get("NODE_ENV"))


class DockerProvider(DelegatingCalls):
    name = "docker"
    # A container shares the host kernel; a suspend removes it, so its background processes stop. Its
    # network is its own internal one behind the egress point; url(port) forwards from host loopback.
    # Every suspend writes its own archive, so any of them can be restored (rewind, fork).
    capabilities = ProviderCapabilities(
        isolation="container",
        pause_keeps_processes=False,
        egress_allow_list=True,
        ports=True,
        checkpoints=True,
        egress_credentials=True,
    )

    def __init__(
        self,
        images: Mapping[str, str],
        snapshots: SnapshotStore,
        *,
        client: docker.DockerClient | None = None,
        environ: Mapping[str, str] = os.environ,
        engine_env: Mapping[str, str] = os.environ,
        limits: DockerLimits | None = None,
        deployment: str = "default",
        disk_limit_mb: int = 10240,
        disk_dir: str | os.PathLike[str] | None = None,
        egress: EgressSettings | None = None,
        runtime: str | None = None,
        pieces: PieceSettings | None = None,
    ) -> None:
        """``environ`` gives NODE_ENV (the production refusal); ``engine_env`` the variables that name the
        engine (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), as ``docker.from_env()`` reads them.
        Left out, both are this process's environment: a provider built without settings refuses
        production and reaches the engine the docker CLI would."""
        refuse_production(environ)
        if not DEPLOYMENT_NAME.fullmatch(deployment):
            raise ValueError(
                f"invalid deployment name {deployment!r} (SANDBOX_DEPLOYMENT): use 1-63 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        if disk_limit_mb < 0:
            raise ValueError(f"disk_limit_mb must be 0 (no limit) or positive, got {disk_limit_mb!r}")
        self._deployment = deployment
        self.disk_limit_mb = disk_limit_mb
        # One directory per deployment: a release by sandbox id never reaches another stack's files.
        self._disks = Disks(os.path.join(disk_dir or DEFAULT_DISK_DIR, deployment), disk_limit_mb)
        self._images = dict(images)
        self._snapshots: SnapshotStore = NamespacedStore(snapshots, deployment)
        self._checkpoints = DockerCheckpoints(self._snapshots, pieces or PieceSettings(), deployment)
        self._limits = limits or DockerLimits()
        self._containers = Containers(deployment, client=client, engine_env=engine_env)
        # The stdlib engine client that exec goes through (None: the SDK's client; see containers.py).
        self._engine = self._containers.engine
        self._exec = ContainerExec(self._containers, self._limits)
        self._files = DockerFiles(self._containers, self._exec, self._limits, disk_limit_mb)
        self._processes = DockerProcesses(self._containers, self._exec, self._limits)
        self._egress = egress or EgressSettings()
        # The OCI runtime the sandbox containers run under (None: the engine's default, runc); the egress
        # point and port forwarders, our own code, always run under the default.
        self._runtime = runtime
        self._network: SandboxNetworks | None = None
        self._network_lock = threading.Lock()

    @property
    def network(self) -> SandboxNetworks:
        """The sandboxes' only way out (docs/network.md); the egress container runs the data-app image.
        Built on first use: its module loads the SDK, which an exec does not need."""
        with self._network_lock:
            if self._network is None:
                # why: network.py imports the docker SDK (85 ms measured), which an exec never needs
                from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks

                self._network = SandboxNetworks(
                    lambda: self.client, self._deployment, self._egress, self._images[DATA_APP]
                )
            return self._network

    @property
    def client(self) -> docker.DockerClient:
        """The docker SDK's client, connected on first use."""
        return self._containers.client

        # ------------------------------------------------------------------ lifecycle

    def create(self, sandbox_id: str, kind: str) -> str:
        kind_spec(kind)  # unknown kind: ValueError before touching the engine
        existing = self._containers.find(sandbox_id)
        if existing is None:
            try:
                return self._start_new(sandbox_id, kind)
            except _NameTaken:
                existing = self._await_concurrent(sandbox_id)
        return self._reuse(sandbox_id, kind, existing)

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        # Archived with the container's processes frozen, so none changes the files under the tar (see
        # snapshot.py).
        containers = self._containers
        try:
            containers.owned(ref, sandbox_id)
            with frozen(containers, ref, f"snapshot sandbox {sandbox_id}"):
                workspace = kind_spec(kind).workspace
                info = store_snapshot(
                    containers,
                    self._checkpoints.pieces,
                    sandbox_id,
                    ref,
                    workspace,
                    snapshot_key,
                    base_key=self._checkpoints.base_of(containers.inspect(ref)),
                    grace_s=self._checkpoints.grace_s,
                )
                # Only now, the snapshot stored and verified, is it safe to release the workspace.
                self._remove(ref, sandbox_id)
        except ProviderLost:
            # A retry of a suspend that already stored this key and removed the container (the process
            # died before recording the outcome): the stored snapshot is the outcome.
            stored_before = self._stored_snapshot(snapshot_key)
            if stored_before is None:
                raise
            return stored_before
        return info

    def resume(
        self, sandbox_id: str, kind: str, snapshot: SnapshotInfo, allow: Sequence[str] | None = None
    ) -> str:
        # why: archive (zstandard, tarfile) costs every exec's start ~18 ms (measured); only resumes use it
        from sandbox_lifecycle.adapters.snapshots.archive import WorkspaceTooLarge

        spec = kind_spec(kind)
        # Verification comes first: a missing or corrupt snapshot (or piece) must not leave a container.
        with self._checkpoints.restorer(
            snapshot,
            spec.workspace,
            max_bytes=self.disk_limit_mb * 1024**2 or None,
            owner=(SANDBOX_UID, SANDBOX_GID),
        ) as restore:
            for attempt in (1, 2):
                # Checks every member, and the total size against the disk limit, now: an unsafe or
                # oversized snapshot is refused before a container exists. Every restored file is the
                # sandbox user's.
                tar_chunks = restore()
                self._clear(sandbox_id, None)  # a stale container from an interrupted resume (or try)
                # Its network's policy is the log's list before the container exists (network.prepare);
                # the label names the checkpoint whose pieces this workspace's next suspend may reuse.
                ref = self._start_new(sandbox_id, kind, allow, base=snapshot.key)
                try:
                    with self._containers.errors(f"restore sandbox {sandbox_id}"):
                        self.client.api.put_archive(ref, spec.workspace.root, tar_chunks)
                    return ref
                except BaseException as exc:
                    self._remove(ref, sandbox_id)
                    if not is_enospc(exc):
                        raise
                    if attempt == 1:
                        # A workspace that filled its disk when suspended was refused 2 in 5 times and fit
                        # on an immediate retry (issue N): what fit once gets a fresh container and disk.
                        log.warning(
                            "restoring sandbox %s ran out of space, retrying once: %s",
                            sandbox_id,
                            exc,
                        )
                        continue
                    # The sizes fit but the filesystem's own overhead did not: still a refusal, not a loss.
                    raise WorkspaceTooLarge(
                        f"the workspace of sandbox {sandbox_id} does not fit its {self.disk_limit_mb} MB "
                        "disk; nothing was restored, the snapshot is kept"
                    ) from exc
        raise AssertionError("unreachable: the second try returns or raises")

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        self._clear(sandbox_id, ref)
        # A suspend and a resume keep them (they are the sandbox's, like its egress policy); a destroy
        # forgets them.
        from sandbox_lifecycle.adapters.egress.credentials import remove_credentials  # why: as above

        remove_credentials(self.network.state_dir, sandbox_id)

    def _clear(self, sandbox_id: str, ref: str | None) -> None:
        """Remove every container of the sandbox, its disks, network and volumes (the instance, not what
        belongs to the sandbox across instances)."""
        found = self._containers.find(sandbox_id)
        if ref is not None and (found is None or found["Id"] != ref):
            other = self._containers.inspect(ref)
            if other is not None:
                self._containers.check_owner(other, sandbox_id, f"container {ref[:12]}")
                self._remove(ref, sandbox_id)
        if found is not None:
            self._remove(found["Id"], sandbox_id)
        # Only once no container of this sandbox is left: a disk still mounted would merely detach later.
        self._disks.release_all(sandbox_id)
        self.network.release(sandbox_id)
        forget_run(Path(self.network.state_dir), sandbox_id)
        # The home volume goes with its container; this catches one left by a `docker rm` without -v.
        with self._containers.errors(f"remove volumes of sandbox {sandbox_id}"):
            volumes = self.client.api.volumes(
                filters={"label": [f"{LABEL_ID}={sandbox_id}", f"{LABEL_DEPLOYMENT}={self._deployment}"]}
            )
            import docker.errors  # why: loaded with the client just used; at the top it would load on exec

            for volume in volumes.get("Volumes") or []:
                with suppress(docker.errors.NotFound):
                    self.client.api.remove_volume(volume["Name"], force=True)

    def usage(self, sandbox_id: str, ref: str) -> Usage | None:
        """What the run of container ``ref`` used (docker/metering.py); None when it is gone."""
        # why: the event types come with it, which `sandboxctl ls` must not load (test_imports.py)
        from sandbox_lifecycle.adapters.providers.docker import metering

        found = self._containers.inspect(ref)
        if found is None:
            return None
        self._containers.check_owner(found, sandbox_id, f"container {ref[:12]}")
        return metering.measure(self.client.api, self.network.state_dir, sandbox_id, ref, found)

    def image_version(self, kind: str) -> str | None:
        """The ID of the kind's image now: a pooled sandbox made from another is stale (core/pool.py)."""
        from sandbox_lifecycle.adapters.providers.docker import metering  # why: as in usage()

        image = self._images.get(kind)
        return None if image is None else metering.image_version(self.client.api, image)

    def check_egress(self, allow: Sequence[str]) -> tuple[str, ...]:
        # why here: the policy parser (ipaddress, socket, json) is for a change of egress, not an exec
        from sandbox_lifecycle.adapters.egress.policy import check_allow

        return check_allow(allow)

    def set_egress(self, sandbox_id: str, ref: str, kind: str, allow: Sequence[str] | None) -> None:
        self._containers.owned(ref, sandbox_id)
        self.network.set_policy(sandbox_id, kind, allow)

    def check_credentials(self, kind: str, allow: Sequence[str] | None, host: str) -> str:
        # why here: as in check_egress (the egress package is for a change of egress, not an exec)
        from sandbox_lifecycle.adapters.egress.credentials import credential_host

        return credential_host(self.network.settings.allow.get(kind, ()) if allow is None else allow, host)

    def set_credentials(self, sandbox_id: str, host: str, headers: Mapping[str, str]) -> None:
        # A file of the egress state (0600), read by the proxy for the sandbox's next request to the host.
        from sandbox_lifecycle.adapters.egress.credentials import write_credentials  # why: as above

        write_credentials(self.network.state_dir, sandbox_id, host, headers)

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        self._snapshots.delete(snapshot.key)

    def copy_snapshot(self, snapshot: SnapshotInfo, key: str) -> SnapshotInfo:
        # A manifest is stored again under the fork's key, sharing the pieces (a fork costs no storage);
        # the fork's manifest then lives and dies with the fork alone, as any snapshot of its stream.
        return self._checkpoints.copy(snapshot, key)

    def remove_stale_uploads(self, older_than: datetime) -> list[str]:
        """What killed suspends of this deployment left in the snapshot store, removed (the sweep calls
        it with the lease; see SnapshotStore.remove_stale_uploads), and the pieces no checkpoint names
        any more (docs/checkpoints.md)."""
        removed = self._snapshots.remove_stale_uploads(older_than, "snapshots/")
        return removed + self._checkpoints.collect(older_than)

    def remove_unused_network(self, older_than: datetime) -> list[str]:
        """Networks, port forwarders and the egress container no sandbox of this deployment needs any
        more, removed (the sweep calls it with the lease; see SandboxNetworks.remove_unused)."""
        live = {inst.sandbox_id for inst in self.list_instances()}
        return self.network.remove_unused(older_than, live)

    def url(self, ref: str, port: int) -> str:
        """A loopback URL of this host reaching ``port`` in the sandbox (a forwarder container; the
        server must listen on the sandbox's network address, e.g. 0.0.0.0)."""
        self._containers.owned(ref)
        found = self._containers.inspect(ref)
        if found is None or not found["State"]["Running"]:
            raise ProviderLost(f"sandbox container {ref[:12]} is not running")
        return self.network.url(labels_of(found)[LABEL_ID], ref, port)

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        size = self._snapshots.stat(snapshot.key)
        return size is not None and (snapshot.bytes is None or size == snapshot.bytes)

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        found = self._containers.find(sandbox_id)
        if found is None:
            return None
        labels = labels_of(found)
        return ProviderInstance(
            sandbox_id=sandbox_id,
            ref=found["Id"],
            kind=labels.get(LABEL_KIND),
            status=_status(found["State"]["Status"]),
        )

    def list_instances(self) -> list[ProviderInstance]:
        with self._containers.errors("list sandbox containers"):
            rows = self.client.api.containers(
                all=True,
                filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_DEPLOYMENT}={self._deployment}"]},
            )
        return [
            ProviderInstance(
                sandbox_id=row["Labels"][LABEL_ID],
                ref=row["Id"],
                kind=row["Labels"].get(LABEL_KIND),
                status=_status(row["State"]),
            )
            for row in rows
            if LABEL_ID in (row.get("Labels") or {})
        ]

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        found: list[tuple[str, SnapshotInfo]] = []
        for key in self._snapshots.keys("snapshots/"):
            parts = key.split("/")
            # snapshots/<sandbox id>/<version>.tar.zst; anything else in the prefix is not ours.
            if len(parts) == 3 and parts[1] and parts[2].endswith(".tar.zst"):
                found.append((parts[1], SnapshotInfo(key=key, sha256=None, bytes=None)))
        return found

    # ------------------------------------------------------------------ exec, files, processes
    # (forwarded to this folder's exec, files and processes parts: providers/delegating.py)

    def model_activity(self, ref: str) -> datetime | None:
        """When the gateway last relayed a model call of this sandbox (None: never)."""
        found = self._containers.inspect(self._containers.owned(ref))
        return None if found is None else self.network.model_call_at(labels_of(found)[LABEL_ID])

    # ------------------------------------------------------------------ internals

    def _start_new(
        self, sandbox_id: str, kind: str, allow: Sequence[str] | None = None, base: str | None = None
    ) -> str:
        from docker.types import DriverConfig, Mount  # why: the SDK, never loaded on the exec path

        spec = kind_spec(kind)
        image = self._images.get(kind)
        if image is None:
            raise ProviderError(f"no Docker image configured for kind {kind!r}")
        labels = {
            LABEL_ID: sandbox_id,
            LABEL_KIND: kind,
            LABEL_MANAGED: "1",
            LABEL_DEPLOYMENT: self._deployment,
        }
        if base is not None:
            labels[LABEL_BASE] = base
        limits = self._limits
        attachment = self.network.prepare(sandbox_id, kind, allow)
        disk = self._disks.make(sandbox_id)
        if disk is not None:
            labels[LABEL_DISK] = disk.image
            # The engine mounts the sandbox's own ext4 filesystem as the home: writing past the limit is
            # ENOSPC inside the sandbox, never a full host disk. The device is named through our own link,
            # which release removes first, so a container config outliving its disk cannot mount a loop
            # device the kernel has since handed to another sandbox.
            driver = DriverConfig("local", {"type": "ext4", "device": disk.link, "o": "nosuid,nodev"})
            home = Mount(target=HOME, source=None, type="volume", labels=labels, driver_config=driver)
        else:
            home = Mount(target=HOME, source=None, type="volume", labels=labels)
        try:
            container = self._create_container(
                image,
                sandbox_id,
                kind,
                name=f"sbx-{sandbox_id}",
                labels=labels,
                user=SANDBOX_USER,
                working_dir=spec.workdir,
                environment={"HOME": HOME, **attachment.environment},
                # Its own internal network, where the egress point is the only other member.
                network=attachment.network,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                pids_limit=limits.pids,
                mem_limit=limits.memory_bytes,
                memswap_limit=limits.memory_bytes,  # no swap on top of the memory limit
                nano_cpus=limits.nano_cpus,
                ipc_mode="private",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmp_size}"},
                # The only writable persistent place; removed with the container (v=True in _remove).
                mounts=[home],
                # docker-init as PID 1 reaps processes orphaned by killed commands.
                init=True,
                runtime=self._runtime,
            )
        except BaseException:
            if disk is not None:
                self._disks.release(disk.image)
            raise
        try:
            with self._containers.errors(f"start container for sandbox {sandbox_id}"):
                container.start()
        except BaseException:
            self._containers.remove(container.id or "")
            if disk is not None:
                self._disks.release(disk.image)
            raise
        ref = container.id or ""
        self._containers.remember(ref, kind)
        return ref

    def _create_container(self, image: str, sandbox_id: str, kind: str, **config: Any) -> Any:
        import docker.errors  # why: the SDK (and requests), never loaded on the exec path
        import requests.exceptions

        try:
            return self.client.containers.create(image, **config)
        except docker.errors.ImageNotFound as exc:
            script = _BUILD_SCRIPTS.get(kind, "the kind's build-local-image.sh")
            error = ProviderError(
                f"Docker image {image!r} for kind {kind!r} is missing; build it with {script}"
            )
            error.retryable = False
            raise error from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise _NameTaken(f"container sbx-{sandbox_id} already exists; retry") from exc
            raise mapped(exc, f"create container for sandbox {sandbox_id}") from exc
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            raise mapped(exc, f"create container for sandbox {sandbox_id}") from exc

    def _reuse(self, sandbox_id: str, kind: str, found: dict[str, Any]) -> str:
        labels = labels_of(found)
        if labels.get(LABEL_MANAGED) != "1" or labels.get(LABEL_ID) != sandbox_id:
            raise ProviderRefused(
                f"a container named sbx-{sandbox_id} exists that sandbox-lifecycle does not manage; "
                "remove or rename it"
            )
        if labels.get(LABEL_KIND) != kind:
            raise ProviderRefused(
                f"container sbx-{sandbox_id} is a {labels.get(LABEL_KIND)!r} sandbox, not {kind!r}"
            )
        ref: str = found["Id"]
        if found["State"]["Status"] != "running":
            image = labels.get(LABEL_DISK)
            if image is not None and not self._disks.attached(image):
                # Its disk is gone (a host reboot detaches loop devices): starting it would mount nothing,
                # or whatever took that loop device since. A stopped container found by create holds
                # nothing a snapshot does not (suspend snapshots before it removes), so start afresh.
                self._remove(ref, sandbox_id)
                return self._start_new(sandbox_id, kind)
            with self._containers.errors(f"start container for sandbox {sandbox_id}", ref):
                self.client.api.start(ref)
        self.network.adopt(sandbox_id, found)
        self._containers.remember(ref, kind)
        return ref

    def _await_concurrent(self, sandbox_id: str) -> dict[str, Any]:
        """The container a concurrent create is making. The engine reserves the name before the
        container can be inspected, so it may take a moment to appear."""
        deadline = time.monotonic() + _CONCURRENT_CREATE_WAIT_S
        while (found := self._containers.find(sandbox_id)) is None:
            if time.monotonic() > deadline:
                raise ProviderError(f"container sbx-{sandbox_id} is being created by someone else; retry")
            time.sleep(0.05)
        return found

    def _stored_snapshot(self, key: str) -> SnapshotInfo | None:
        """The snapshot under ``key`` with its sha256 (streamed, never buffered), or None if absent.

        Stores write a key atomically, so an object that exists is a whole snapshot."""
        # why: archive (zstandard, tarfile) costs every exec's start ~18 ms (measured); only a retry needs it
        from sandbox_lifecycle.adapters.snapshots.archive import HashingReader

        size = self._snapshots.stat(key)
        if size is None:
            return None
        source = self._snapshots.open(key)
        try:
            reader = HashingReader(source)
            while reader.read(1024**2):
                pass
        finally:
            source.close()
        if reader.bytes_read != size:
            raise ProviderError(f"snapshot {key!r} changed while being read; retry")
        # What the first try uploaded is not known any more (bytes_new None); the workspace's size is.
        workspace = self._checkpoints.workspace_bytes(key)
        return SnapshotInfo(key=key, sha256=reader.sha256, bytes=size, workspace_bytes=workspace)

    def _remove(self, ref: str, sandbox_id: str) -> None:
        """Remove one of the sandbox's containers, its home volume and its disks; gone already is success."""
        self._containers.remove(ref)
        self._disks.release_all(sandbox_id)
        self.network.release(sandbox_id)


class _NameTaken(ProviderError):
    """Another container holds the name ``sbx-<id>`` (typically a concurrent create)."""


def _status(docker_status: str) -> str:
    if docker_status in ("running", "restarting"):
        return "running"
    if docker_status == "paused":
        return "paused"
    return "stopped"
