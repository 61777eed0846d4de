"""SandboxProvider on a local Docker engine: one hardened container per sandbox, snapshots in a SnapshotStore.

For development and self-hosting only. The Docker socket is root-equivalent and a container shares the
host kernel, so this provider is not an isolation boundary for untrusted code; it refuses to start under
NODE_ENV=production (use SANDBOX_PROVIDER=e2b there).

Containers are named ``sbx-<sandbox id>`` and labelled with the sandbox id, kind and deployment, so every
operation is idempotent by name and the reconciler can find what we own. The root filesystem is read-only;
the home directory is an anonymous volume (seeded from the image, removed with the container) holding a
filesystem of its own with a hard size (``disk_limit_mb``, see ``_Disks``), /tmp a tmpfs.

Every call that acts on a container checks first that it carries this deployment's label (and the
sandbox's id, where the call has it), and raises ForeignSandbox otherwise: a copied database holds the
original deployment's ids and refs.

Several deployments (two data dirs, staging and production) may share one engine and one snapshot store;
each lists, and so reconciles, only the containers labelled with its own deployment and the snapshots
under its own ``<deployment>/`` prefix of the store.
"""

from __future__ import annotations

import io
import math
import os
import posixpath
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from sandbox_lifecycle.adapters.composition.settings import EgressSettings
from sandbox_lifecycle.adapters.composition.settings import refuse_production as _refuse_production
from sandbox_lifecycle.adapters.providers.docker.engine import (
    DockerEngine,
    EngineAPIError,
    EngineTimeout,
    EngineUnreachable,
    engine_from_environ,
)
from sandbox_lifecycle.adapters.providers.reap import EXEC_MARKER as _EXEC_MARKER
from sandbox_lifecycle.adapters.providers.reap import REAP_FUNCTION as _REAP_FUNCTION
from sandbox_lifecycle.core.errors import (
    ForeignSandbox,
    ProviderError,
    ProviderLost,
    ProviderRefused,
)
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME, KINDS, kind_spec
from sandbox_lifecycle.core.ports import (
    ExecResult,
    FileEntry,
    OutputCallback,
    ProcessInfo,
    ProviderCapabilities,
    ProviderInstance,
    SnapshotInfo,
    SnapshotStore,
    TransferReport,
)
from sandbox_lifecycle.core.streaming import OutputCollector

if TYPE_CHECKING:
    # The SDK (and requests under it) is imported where it is used, never on the exec path: see
    # docker_engine.py. The network module imports it too.
    import docker
    import docker.errors

    from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks
    from sandbox_lifecycle.adapters.providers.docker.processes import DockerProcesses

LABEL_ID = "sandbox-lifecycle.id"
LABEL_KIND = "sandbox-lifecycle.kind"
LABEL_MANAGED = "sandbox-lifecycle.managed"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
# The host file backing the home filesystem of a container with a disk limit (see _Disks).
LABEL_DISK = "sandbox-lifecycle.disk"
# A Docker label value and a path segment of the snapshot store; a leading dot or dash would let "." or
# ".." (a directory escape in a local store) or an option-like name through.
_DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# The uid/gid the images create user `sandbox` with; everything runs as it, never as root.
SANDBOX_USER = "1000:1000"
SANDBOX_UID = 1000
SANDBOX_GID = 1000

# Which script builds the image of each kind, for the "image missing" message.
_BUILD_SCRIPTS = {
    DATA_APP: "sandboxes/data-apps/build-local-image.sh",
    AI_WRITEBACK: "sandboxes/ai-writeback/build-local-image.sh",
}
_START_ENGINE_HINT = (
    "start it with `sudo scripts/start-docker.sh` (or start Docker Desktop), or set DOCKER_HOST"
)

# The kill after a timeout runs in an exec of its own, which carries no marker; the marker is its argument.
_KILL_MARKED_SCRIPT = _REAP_FUNCTION + 'SANDBOX_LIFECYCLE_EXEC="$1" reap ""\n'
# Every exec runs under this wrapper: when the command returns, whatever it left running in the background
# (`cmd &`, a daemonized server) is killed too, so an exec that returned leaves no process behind and its
# output stream closes. The wrapper itself is spared until it exits with the command's status.
_EXEC_WRAPPER = _REAP_FUNCTION + '"$@"; rc=$?; reap $$; exit $rc\n'
# `timeout` inside the container is a backstop for when this process dies mid-exec: the command still
# cannot outlive its deadline by more than this.
_BACKSTOP_GRACE_S = 5
# How long to wait for the output stream to close once the command's processes were killed.
_DRAIN_AFTER_KILL_S = 5.0
# How long the engine may take to report an exec's exit code after its stream closed.
_EXIT_CODE_WAIT_S = 5.0
# How long a create that lost the name to a concurrent one waits for that container to be inspectable.
_CONCURRENT_CREATE_WAIT_S = 10.0
# Slack over the file's size for tar headers and padding when reading one file's archive.
_TAR_OVERHEAD = 64 * 1024
# Where the per-sandbox disk images live on the engine's host (one subdirectory per deployment).
DEFAULT_DISK_DIR = "/var/lib/sandbox-lifecycle/disks"
# A sandbox id as a file name as is; anything else (never made by the service) is hashed.
_FILE_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DISK_TOOL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class DockerLimits:
    """Per-container resource limits and per-call output bounds."""

    memory_bytes: int = 2 * 1024**3
    nano_cpus: int = 1_000_000_000  # one CPU
    pids: int = 512
    tmp_size: str = "256m"
    max_output_bytes: int = 1024**2  # per stream per exec
    max_read_bytes: int = 16 * 1024**2  # per read_file


def refuse_production(environ: Mapping[str, str]) -> None:
    """Raise ProviderRefused under NODE_ENV=production (Settings checks it before anything is built)."""
    _refuse_production(environ.get("NODE_ENV"))


class DockerProvider:
    name = "docker"
    # A container shares the host kernel; a suspend removes it, so its background processes stop. Its
    # network is its own internal one behind the egress point; url(port) forwards from host loopback.
    capabilities = ProviderCapabilities(
        isolation="container", pause_keeps_processes=False, egress_allow_list=True, ports=True
    )

    def __init__(
        self,
        images: Mapping[str, str],
        snapshots: SnapshotStore,
        *,
        client: docker.DockerClient | None = None,
        environ: Mapping[str, str] = os.environ,
        limits: DockerLimits | None = None,
        deployment: str = "default",
        disk_limit_mb: int = 10240,
        disk_dir: str | os.PathLike[str] | None = None,
        egress: EgressSettings | None = None,
        runtime: str | None = None,
    ) -> None:
        refuse_production(environ)
        self.disk_limit_mb = disk_limit_mb
        if not _DEPLOYMENT_NAME.fullmatch(deployment):
            raise ValueError(
                f"invalid deployment name {deployment!r} (SANDBOX_DEPLOYMENT): use 1-63 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        self._deployment = deployment
        self.disk_limit_mb = disk_limit_mb
        if disk_limit_mb < 0:
            raise ValueError(f"disk_limit_mb must be 0 (no limit) or positive, got {disk_limit_mb!r}")
        # One directory per deployment: a release by sandbox id never reaches another stack's files.
        self._disks = _Disks(os.path.join(disk_dir or DEFAULT_DISK_DIR, deployment), disk_limit_mb)
        self._images = dict(images)
        self._snapshots: SnapshotStore = _Namespaced(snapshots, deployment)
        self._limits = limits or DockerLimits()
        # Connecting negotiates the API version with the engine; do it on first use so that building the
        # provider (e.g. for `sandboxctl ls`) does not need a running engine.
        self._client = client
        self._client_lock = threading.Lock()
        # The calls of an exec go to the engine through the stdlib client where it reaches the engine the
        # SDK would (and no client was handed in); through the SDK otherwise. Same calls, same results.
        self._engine: DockerEngine | None = None if client is not None else engine_from_environ(os.environ)
        # ref -> kind of the containers checked to be ours (labels never change and ids are never reused,
        # so one check per container holds): an exec's default cwd and ownership without an inspect per call.
        self._kinds: dict[str, str] = {}
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
                from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks

                self._network = SandboxNetworks(
                    lambda: self.client, self._deployment, self._egress, self._images[DATA_APP]
                )
            return self._network

    # ------------------------------------------------------------------ lifecycle

    def create(self, sandbox_id: str, kind: str) -> str:
        kind_spec(kind)  # unknown kind: ValueError before touching the engine
        existing = self._find(sandbox_id)
        if existing is None:
            try:
                return self._start_new(sandbox_id, kind)
            except _NameTaken:
                existing = self._await_concurrent(sandbox_id)
        return self._reuse(sandbox_id, kind, existing)

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        # Archived with the container's processes frozen, so none changes the files under the tar (see
        # docker_snapshot); the module (and zstandard, tarfile) loads for the calls that move workspaces.
        from sandbox_lifecycle.adapters.providers.docker.snapshot import frozen, store_snapshot

        try:
            self._owned(ref, sandbox_id)
            with frozen(self, ref, f"snapshot sandbox {sandbox_id}"):
                info = store_snapshot(self, sandbox_id, ref, kind_spec(kind).workspace, snapshot_key)
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

    def resume(self, sandbox_id: str, kind: str, snapshot: SnapshotInfo) -> str:
        from sandbox_lifecycle.adapters.snapshots.archive import (
            WorkspaceTooLarge,
            fetch_verified,
            restore_stream,
        )

        spec = kind_spec(kind)
        # Verification comes first: a missing or corrupt snapshot must not leave a container behind.
        with fetch_verified(self._snapshots, snapshot) as archive:
            # Checks every member, and the total size against the disk limit, now: an unsafe or oversized
            # archive is refused before a container exists. Every restored file is the sandbox user's.
            tar_chunks = restore_stream(
                archive,
                spec.workspace,
                max_bytes=self.disk_limit_mb * 1024**2 or None,
                owner=(SANDBOX_UID, SANDBOX_GID),
            )
            self.destroy(sandbox_id, None)  # a stale container from an interrupted resume
            ref = self._start_new(sandbox_id, kind)
            try:
                with self._errors(f"restore sandbox {sandbox_id}"):
                    self.client.api.put_archive(ref, spec.workspace.root, tar_chunks)
            except BaseException as exc:
                self._remove(ref, sandbox_id)
                if _is_enospc(exc):
                    # The sizes fit but the filesystem's own overhead did not: still a refusal, not a loss.
                    raise WorkspaceTooLarge(
                        f"the workspace of sandbox {sandbox_id} does not fit its {self.disk_limit_mb} MB "
                        "disk; nothing was restored, the snapshot is kept"
                    ) from exc
                raise
        return ref

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        found = self._find(sandbox_id)
        if ref is not None and (found is None or found["Id"] != ref):
            other = self._inspect(ref)
            if other is not None:
                self._check_owner(other, sandbox_id, f"container {ref[:12]}")
                self._remove(ref, sandbox_id)
        if found is not None:
            self._remove(found["Id"], sandbox_id)
        # Only once no container of this sandbox is left: a disk still mounted would merely detach later.
        self._disks.release_all(sandbox_id)
        self.network.release(sandbox_id)
        # The home volume goes with its container; this catches one left by a `docker rm` without -v.
        with self._errors(f"remove volumes of sandbox {sandbox_id}"):
            volumes = self.client.api.volumes(
                filters={"label": [f"{LABEL_ID}={sandbox_id}", f"{LABEL_DEPLOYMENT}={self._deployment}"]}
            )
            import docker.errors

            for volume in volumes.get("Volumes") or []:
                with suppress(docker.errors.NotFound):
                    self.client.api.remove_volume(volume["Name"], force=True)

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        self._snapshots.delete(snapshot.key)

    def remove_stale_uploads(self, older_than: datetime) -> list[str]:
        """What killed suspends of this deployment left in the snapshot store, removed (the sweep calls
        it with the lease; see SnapshotStore.remove_stale_uploads)."""
        return self._snapshots.remove_stale_uploads(older_than, "snapshots/")

    def remove_unused_network(self, older_than: datetime) -> list[str]:
        """Networks, port forwarders and the egress container no sandbox of this deployment needs any
        more, removed (the sweep calls it with the lease; see SandboxNetworks.remove_unused)."""
        live = {inst.sandbox_id for inst in self.list_instances()}
        return self.network.remove_unused(older_than, live)

    def url(self, ref: str, port: int) -> str:
        """A loopback URL of this host reaching ``port`` in the sandbox (a forwarder container; the
        server must listen on the sandbox's network address, e.g. 0.0.0.0)."""
        self._owned(ref)
        found = self._inspect(ref)
        if found is None or not found["State"]["Running"]:
            raise ProviderLost(f"sandbox container {ref[:12]} is not running")
        return self.network.url(_labels(found)[LABEL_ID], ref, port)

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        size = self._snapshots.stat(snapshot.key)
        return size is not None and (snapshot.bytes is None or size == snapshot.bytes)

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        found = self._find(sandbox_id)
        if found is None:
            return None
        labels = _labels(found)
        return ProviderInstance(
            sandbox_id=sandbox_id,
            ref=found["Id"],
            kind=labels.get(LABEL_KIND),
            status=_status(found["State"]["Status"]),
        )

    def list_instances(self) -> list[ProviderInstance]:
        with self._errors("list sandbox containers"):
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

    # ------------------------------------------------------------------ exec and files

    def exec(
        self,
        ref: str,
        command: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        if not command:
            raise ValueError("exec needs a command")
        if not timeout > 0:
            raise ValueError(f"exec timeout must be positive, got {timeout!r}")
        bad = [k for k in env or {} if not k or "=" in k]
        if bad:
            raise ValueError(f"invalid environment variable names: {bad!r}")
        marker = random_id()
        environment = [f"{k}={v}" for k, v in (env or {}).items() if k != _EXEC_MARKER]
        environment.append(f"{_EXEC_MARKER}={marker}")
        # timeout(1) stops parsing options at the duration, so a command starting with "-" stays a command.
        argv = [
            *("bash", "-c", _EXEC_WRAPPER, "bash"),
            *("timeout", "--signal=KILL", str(math.ceil(timeout) + _BACKSTOP_GRACE_S)),
            *command,
        ]
        calls = self._exec_calls
        workdir = cwd or self._workdir(ref)  # also verifies the container is ours, before anything runs
        with self._errors("exec", ref):
            exec_id = calls.exec_create(
                ref, argv, user=SANDBOX_USER, environment=environment, workdir=workdir
            )
            stream = calls.exec_stream(exec_id)

        limit = self._limits.max_output_bytes if max_output_bytes is None else max_output_bytes
        output = _BoundedOutput(limit, on_stdout, on_stderr)
        # A worker reads the stream so this thread can keep the deadline; the stream only yields when
        # the command writes, so a silent command would otherwise block us forever.
        reader = threading.Thread(
            target=output.drain, args=(stream,), name=f"exec-{exec_id[:12]}", daemon=True
        )
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self._kill_marked(ref, marker)
            reader.join(_DRAIN_AFTER_KILL_S)
            if reader.is_alive():  # something escaped the kill and holds the stream open: stop reading
                # (an SDK stream is a generator, which cannot be closed while the reader runs it: that
                # daemon reader is left behind then)
                with suppress(ValueError):
                    stream.close()
            raise output.timed_out(shlex.join(command), timeout)
        if output.error is not None:
            raise self._mapped(output.error, "exec", ref)
        return output.result(self._exit_code(exec_id))

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        full = self._resolve(ref, path)
        parent, name = posixpath.split(full)
        import tarfile

        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), 0o644, int(time.time())
            member.uid = member.gid = SANDBOX_UID
            member.uname = member.gname = "sandbox"
            tar.addfile(member, io.BytesIO(data))
        payload = archive.getvalue()
        try:
            with self._errors(f"write {full}", ref, missing_ok=True):
                self.client.api.put_archive(ref, parent, payload)
            return
        except FileNotFoundError:
            pass
        # The parent is missing: create it as the sandbox user (so it owns every new level), then retry.
        result = self.exec(ref, ["mkdir", "-p", "--", parent], timeout=30, cwd=HOME)
        if result.exit_code != 0:
            raise ProviderError(f"cannot create {parent} in the sandbox: {result.stderr.strip()}")
        with self._errors(f"write {full}", ref):
            self.client.api.put_archive(ref, parent, payload)

    def read_file(self, ref: str, path: str) -> bytes:
        full = self._resolve(ref, path)
        limit = self._limits.max_read_bytes
        with self._errors(f"read {full}", ref, missing_ok=True):
            chunks, stat = self.client.api.get_archive(ref, full)
            if stat["size"] > limit:
                raise ProviderError(
                    f"{full} is {stat['size']} bytes; read_file returns at most {limit} (raise "
                    "DockerLimits.max_read_bytes, or exec a command that reads it in parts)"
                )
            buffer = bytearray()
            for chunk in chunks:
                buffer += chunk
                if len(buffer) > limit + _TAR_OVERHEAD:  # the file grew while being read
                    raise ProviderError(f"{full} is larger than the {limit} bytes read_file returns")
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(bytes(buffer)), mode="r:") as tar:
            member = tar.next()
            content = tar.extractfile(member) if member is not None and member.isfile() else None
            if content is None:
                raise ProviderError(f"{full} is not a regular file")
            return content.read()

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        if not files:
            return
        resolved = {self._resolve(ref, path): data for path, data in files.items()}
        # One exec creates every missing parent as the sandbox user (put_archive would make them as
        # root), then one archive rooted at HOME carries every file.
        parents = sorted({posixpath.dirname(full) for full in resolved})
        made = self.exec(ref, ["mkdir", "-p", "--", *parents], timeout=30, cwd=HOME)
        if made.exit_code != 0:
            raise ProviderError(
                f"cannot create the parents of the files in the sandbox: {made.stderr.strip()}"
            )

        import tarfile

        def members() -> Iterator[bytes]:
            now = int(time.time())
            for full, data in resolved.items():
                member = tarfile.TarInfo(posixpath.relpath(full, HOME))
                member.size, member.mode, member.mtime = len(data), 0o644, now
                member.uid = member.gid = SANDBOX_UID
                member.uname = member.gname = ""
                yield member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                yield data
                if pad := -len(data) % tarfile.BLOCKSIZE:
                    yield b"\0" * pad
            yield b"\0" * (2 * tarfile.BLOCKSIZE)

        with self._errors(f"write {len(resolved)} files", ref):
            self.client.api.put_archive(ref, HOME, b"".join(members()))

    def remove(self, ref: str, path: str) -> None:
        full = self._resolve(ref, path)
        # rm -f is quiet about a missing path, which is success; as the sandbox user, so it can only
        # remove what the sandbox itself could.
        done = self.exec(ref, ["rm", "-rf", "--", full], timeout=120, cwd=HOME)
        if done.exit_code != 0:
            raise ProviderError(f"cannot remove {full} in the sandbox: {done.stderr.strip()}")

    def list_dir(self, ref: str, path: str) -> list[FileEntry]:
        full = self._resolve_dir(ref, path)
        done = self.exec(ref, ["bash", "-c", _LIST_SCRIPT, "bash", full], timeout=60, cwd=HOME)
        _raise_for_path(done, full)
        if done.exit_code != 0 or done.truncated:
            detail = "the listing is too long" if done.truncated else done.stderr.strip()
            raise ProviderError(f"cannot list {full} in the sandbox: {detail}")
        return _parse_listing(done.stdout_bytes)

    def exists(self, ref: str, path: str) -> bool:
        full = self._resolve_dir(ref, path)
        done = self.exec(ref, ["bash", "-c", "[[ -e $1 || -L $1 ]]", "bash", full], timeout=30, cwd=HOME)
        return done.exit_code == 0

    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport:
        from sandbox_lifecycle.adapters.providers.tree import TransferCounter, pack_dir
        from sandbox_lifecycle.adapters.snapshots.archive import WorkspaceTooLarge

        full = self._resolve_dir(ref, remote_dir)
        counter = TransferCounter()
        chunks = pack_dir(local_dir, counter, owner=(SANDBOX_UID, SANDBOX_GID))
        made = self.exec(ref, ["mkdir", "-p", "--", full], timeout=30, cwd=HOME)
        if made.exit_code != 0:
            raise ProviderError(f"cannot create {full} in the sandbox: {made.stderr.strip()}")
        try:
            # A generator body goes out chunked: the engine reads it as it is made, nothing is buffered.
            with self._errors(f"upload to {full}", ref):
                self.client.api.put_archive(ref, full, chunks)
        except ProviderError as exc:
            if _is_enospc(exc):
                raise WorkspaceTooLarge(
                    f"the upload to {full} does not fit the sandbox's {self.disk_limit_mb} MB disk"
                ) from exc
            raise
        return counter.report()

    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport:
        from sandbox_lifecycle.adapters.providers.tree import extract_stream
        from sandbox_lifecycle.adapters.snapshots.archive import CHUNK

        full = self._resolve_dir(ref, remote_dir)
        self._owned(ref)
        with self._errors(f"download {full}", ref, missing_ok=True):
            chunks, _ = self.client.api.get_archive(ref, full, chunk_size=CHUNK)
        with self._errors(f"download {full}", ref):
            try:
                return extract_stream(chunks, local_dir, top=posixpath.basename(full))
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

    def _resolve_dir(self, ref: str, path: str) -> str:
        """Like ``_resolve``, but HOME itself is allowed: listing or copying the whole home is fine; only
        writing a file named HOME is not."""
        full = posixpath.normpath(posixpath.join(self._workdir(ref), path))
        if full != HOME:
            return self._resolve(ref, path)
        return full

    # ------------------------------------------------------------------ internals

    @property
    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                import docker

                try:
                    self._client = docker.from_env()
                except docker.errors.DockerException as exc:
                    raise ProviderError(
                        f"the Docker engine is unreachable ({exc}); {_START_ENGINE_HINT}"
                    ) from exc
            return self._client

    @property
    def _exec_calls(self) -> _ExecCalls:
        """What exec and inspect go through: the stdlib engine client, or the SDK where it cannot go."""
        if self._engine is not None:
            return self._engine
        return _SdkExecCalls(self.client.api)

    def _start_new(self, sandbox_id: str, kind: str) -> str:
        from docker.types import DriverConfig, Mount

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
        limits = self._limits
        attachment = self.network.prepare(sandbox_id, kind)
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
            with self._errors(f"start container for sandbox {sandbox_id}"):
                container.start()
        except BaseException:
            self._remove_container(container.id or "")
            if disk is not None:
                self._disks.release(disk.image)
            raise
        ref = container.id or ""
        self._kinds[ref] = kind
        return ref

    def _create_container(self, image: str, sandbox_id: str, kind: str, **config: Any) -> Any:
        import docker.errors
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
            raise self._mapped(exc, f"create container for sandbox {sandbox_id}") from exc
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            raise self._mapped(exc, f"create container for sandbox {sandbox_id}") from exc

    def _reuse(self, sandbox_id: str, kind: str, found: dict[str, Any]) -> str:
        labels = _labels(found)
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
            with self._errors(f"start container for sandbox {sandbox_id}", ref):
                self.client.api.start(ref)
        self.network.adopt(sandbox_id, found)
        self._kinds[ref] = kind
        return ref

    def _await_concurrent(self, sandbox_id: str) -> dict[str, Any]:
        """The container a concurrent create is making. The engine reserves the name before the
        container can be inspected, so it may take a moment to appear."""
        deadline = time.monotonic() + _CONCURRENT_CREATE_WAIT_S
        while (found := self._find(sandbox_id)) is None:
            if time.monotonic() > deadline:
                raise ProviderError(f"container sbx-{sandbox_id} is being created by someone else; retry")
            time.sleep(0.05)
        return found

    def _stored_snapshot(self, key: str) -> SnapshotInfo | None:
        """The snapshot under ``key`` with its sha256 (streamed, never buffered), or None if absent.

        Stores write a key atomically, so an object that exists is a whole snapshot."""
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
        return SnapshotInfo(key=key, sha256=reader.sha256, bytes=size)

    def _find(self, sandbox_id: str) -> dict[str, Any] | None:
        """The container named for this sandbox; one of another deployment is refused, never adopted.

        Names are unique per engine, so the other deployment's container blocks ours; reusing, reporting
        or removing it would take over or destroy their workspace. A managed container that carries no
        deployment (made before deployments were labelled) cannot be told apart from another stack's, so
        it is refused the same way. A container of that name that we do not manage at all is left to
        ``_reuse`` to refuse, with its own message.
        """
        found = self._inspect(f"sbx-{sandbox_id}")
        if found is not None and _labels(found).get(LABEL_MANAGED) == "1":
            self._check_owner(found, sandbox_id, f"container sbx-{sandbox_id}")
        return found

    def _check_owner(self, found: Mapping[str, Any], sandbox_id: str | None, what: str) -> None:
        """Raise ForeignSandbox unless the container carries this deployment's label (and, when given,
        this sandbox's id). Called before every operation that acts on a container."""
        labels = _labels(found)
        owner = labels.get(LABEL_DEPLOYMENT)
        holder = labels.get(LABEL_ID)
        if labels.get(LABEL_MANAGED) != "1" or holder is None:
            detail = "it is not a sandbox-lifecycle container"
        elif owner is None:
            detail = "it carries no deployment label (made before deployments were labelled)"
        elif owner != self._deployment:
            detail = f"deployment {owner!r}, not {self._deployment!r}"
        elif sandbox_id is not None and holder != sandbox_id:
            detail = f"it is sandbox {holder}'s"
        else:
            return
        raise ForeignSandbox(sandbox_id or holder or "?", what, detail)

    def _owned(self, ref: str, sandbox_id: str | None = None) -> str:
        """The kind of container ``ref`` once it is checked to be ours; ProviderLost when it is gone.

        exec and the file calls only get the ref. The record that holds it was written by create or
        resume for one sandbox, and container ids are never reused, so a ref of this deployment is that
        sandbox's; the deployment check is what stops a copied database from reaching the original's."""
        kind = self._kinds.get(ref)
        if kind is not None and sandbox_id is None:
            return kind
        found = self._inspect(ref)
        if found is None:
            raise ProviderLost(f"sandbox container {ref[:12]} no longer exists")
        self._check_owner(found, sandbox_id, f"container {ref[:12]}")
        kind = _labels(found).get(LABEL_KIND, "")
        self._kinds[ref] = kind
        return kind

    def _inspect(self, name_or_id: str) -> dict[str, Any] | None:
        try:
            with self._errors(f"inspect container {name_or_id}"):
                found: dict[str, Any] = self._exec_calls.inspect_container(name_or_id)
                return found
        except ProviderLost:
            return None

    def _remove(self, ref: str, sandbox_id: str) -> None:
        """Remove one of the sandbox's containers, its home volume and its disks; gone already is success."""
        self._remove_container(ref)
        self._disks.release_all(sandbox_id)
        self.network.release(sandbox_id)

    def _remove_container(self, ref: str) -> None:
        self._kinds.pop(ref, None)
        try:
            with self._errors(f"remove container {ref[:12]}"):
                self.client.api.remove_container(ref, v=True, force=True)
        except ProviderLost:
            pass

    def _workdir(self, ref: str) -> str:
        kind = self._owned(ref)
        return kind_spec(kind).workdir if kind in KINDS else HOME

    def _resolve(self, ref: str, path: str) -> str:
        """An absolute path under HOME: relative paths start at the kind's workdir; escapes are refused."""
        full = posixpath.normpath(posixpath.join(self._workdir(ref), path))
        if not full.startswith(HOME + "/"):
            raise ValueError(f"path {path!r} is outside the sandbox home {HOME}")
        return full

    def _kill_marked(self, ref: str, marker: str) -> None:
        with self._errors("kill timed-out command", ref):
            calls = self._exec_calls
            exec_id = calls.exec_create(
                ref, ["bash", "-c", _KILL_MARKED_SCRIPT, "bash", marker], user=SANDBOX_USER
            )
            calls.exec_run(exec_id)

    def _exit_code(self, exec_id: str) -> int:
        deadline = time.monotonic() + _EXIT_CODE_WAIT_S
        while True:
            with self._errors("inspect exec"):
                state = self._exec_calls.exec_inspect(exec_id)
            if not state["Running"] and state["ExitCode"] is not None:
                return int(state["ExitCode"])
            if time.monotonic() > deadline:
                raise ProviderError(f"the engine did not report the exit code of exec {exec_id[:12]}; retry")
            time.sleep(0.01)

    @contextmanager
    def _errors(self, action: str, ref: str | None = None, *, missing_ok: bool = False) -> Iterator[None]:
        """Translate docker/requests errors into ProviderError subclasses.

        With ``missing_ok``, a 404 for a path inside a live container becomes FileNotFoundError.
        """
        try:
            yield
        except Exception as exc:
            if not _is_engine_error(exc):
                raise
            if missing_ok and _is_not_found(exc) and ref and self._inspect(ref):
                raise FileNotFoundError(f"{action}: no such file in the sandbox") from exc
            raise self._mapped(exc, action, ref) from exc

    # ------------------------------------------------------------------ background processes and ports

    @property
    def _processes(self) -> DockerProcesses:
        # Background processes load their module (and its supervisor script) with the first one.
        from sandbox_lifecycle.adapters.providers.docker.processes import DockerProcesses

        return DockerProcesses(self)

    def start(
        self,
        ref: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ProcessInfo:
        return self._processes.start(ref, command, env=env, cwd=cwd)

    def processes(self, ref: str) -> list[ProcessInfo]:
        return self._processes.processes(ref)

    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]:
        return self._processes.process_output(ref, pid)

    def wait_process(self, ref: str, pid: str, timeout: float) -> int:
        return self._processes.wait_process(ref, pid, timeout)

    def kill_process(self, ref: str, pid: str) -> None:
        self._processes.kill_process(ref, pid)

    def last_activity(self, ref: str) -> datetime | None:
        return self._processes.last_activity(ref)

    def model_activity(self, ref: str) -> datetime | None:
        """When the gateway last relayed a model call of this sandbox (None: never)."""
        found = self._inspect(self._owned(ref))
        return None if found is None else self.network.model_call_at(_labels(found)[LABEL_ID])

    @staticmethod
    def _mapped(exc: BaseException, action: str, ref: str | None = None) -> ProviderError:
        if _is_unreachable(exc):
            return ProviderError(f"{action}: the Docker engine is unreachable ({exc}); {_START_ENGINE_HINT}")
        if _is_not_found(exc):
            what = f"container {ref[:12]}" if ref else "the container"
            return ProviderLost(f"{action}: {what} no longer exists ({_explain(exc)})")
        if _is_api_error(exc):
            return ProviderError(f"{action} failed: {_explain(exc)}")
        return ProviderError(f"{action} failed: {exc}")


class _Namespaced:
    """A SnapshotStore seen through ``<deployment>/``: callers store, list and get back the keys they
    always used, and never see another deployment's objects in the same directory or bucket."""

    def __init__(self, store: SnapshotStore, deployment: str) -> None:
        self._store = store
        self._prefix = f"{deployment}/"

    def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
        return replace(self._store.put(self._prefix + key, stream), key=key)

    def open(self, key: str) -> BinaryIO:
        return self._store.open(self._prefix + key)

    def stat(self, key: str) -> int | None:
        return self._store.stat(self._prefix + key)

    def delete(self, key: str) -> None:
        self._store.delete(self._prefix + key)

    def remove_stale_uploads(self, older_than: datetime, prefix: str = "") -> list[str]:
        return self._store.remove_stale_uploads(older_than, self._prefix + prefix)

    def keys(self, prefix: str = "") -> Iterator[str]:
        for key in self._store.keys(self._prefix + prefix):
            yield key.removeprefix(self._prefix)


@dataclass(frozen=True, slots=True)
class _Disk:
    """The size-limited filesystem of one sandbox's home: a sparse file on a loop device."""

    image: str  # the sparse file holding the filesystem
    link: str  # our name for its loop device, what the container's volume mounts


class _Disks:
    """Per-sandbox home filesystems with a hard size: a sparse file holding ext4, on a loop device.

    The engine mounts it (a ``local`` volume of type ext4 on the device), so the limit holds whatever the
    sandbox does, costs no RAM, and takes only the blocks actually written on the host disk. The engine's
    ``local`` driver cannot attach a loop device itself (``o=loop`` is a mount(8) option, not the
    kernel's), so this attaches it: it needs root on the engine's host, which the Docker socket already
    amounts to. Files are named ``<sandbox id>.<nonce>.img`` in a directory of the deployment, so a
    sandbox's disks are found, and released, by its id alone: after a suspend, a destroy, or a crash
    that left a disk without its container.
    """

    def __init__(self, root: str, limit_mb: int) -> None:
        self.root = root
        self.limit_bytes = limit_mb * 1024**2

    def make(self, sandbox_id: str) -> _Disk | None:
        if not self.limit_bytes:
            return None
        image = os.path.join(self.root, f"{_file_name(sandbox_id)}.{random_id()[:12]}.img")
        for attempt in range(3):  # release_all removes the directory once it is empty
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            try:
                with open(image, "xb") as file:
                    file.truncate(self.limit_bytes)  # sparse: host blocks are taken only as written
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            # No reserved blocks (nobody but the sandbox user writes here); root owned by the sandbox user;
            # lazy init keeps a 10 GiB filesystem at ~4 MB and ~0.1 s to make.
            extended = f"root_owner={SANDBOX_UID}:{SANDBOX_GID},lazy_itable_init=1,lazy_journal_init=1"
            _run_tool("mkfs.ext4", "-q", "-F", "-m", "0", "-E", extended + ",nodiscard", image)
            # The engine seeds a new volume from the image's home only when it is empty.
            _run_tool("debugfs", "-w", "-R", "rmdir lost+found", image)
            device = _run_tool("losetup", "--find", "--show", "--", image).strip()
            os.symlink(device, image.removesuffix(".img") + ".dev")
        except BaseException:
            self.release(image)
            raise
        return _Disk(image=image, link=image.removesuffix(".img") + ".dev")

    def attached(self, image: str) -> bool:
        """Whether our link still names a loop device backed by this very file."""
        try:
            device = os.readlink(image.removesuffix(".img") + ".dev")
            with open(f"/sys/block/{os.path.basename(device)}/loop/backing_file") as backing:
                return backing.read().strip() == image
        except OSError:
            return False

    def release(self, image: str) -> None:
        """Detach and delete one disk. The link goes first: from then on nothing can mount the device."""
        with suppress(FileNotFoundError):
            os.unlink(image.removesuffix(".img") + ".dev")
        if os.path.exists(image):
            for device in _run_tool("losetup", "--noheadings", "--output", "NAME", "-j", image).split():
                # A device still mounted (a container the engine has not let go of yet) is detached by
                # the kernel once unmounted; the file's blocks are freed then.
                with suppress(ProviderError):
                    _run_tool("losetup", "-d", device)
            with suppress(FileNotFoundError):
                os.unlink(image)

    def release_all(self, sandbox_id: str) -> None:
        if not os.path.isdir(self.root):
            return
        prefix = _file_name(sandbox_id) + "."
        for name in os.listdir(self.root):
            if name.startswith(prefix) and name.endswith(".img"):
                self.release(os.path.join(self.root, name))
        # A deployment that holds no disk leaves no directory behind (ENOTEMPTY while it does).
        with suppress(OSError):
            os.rmdir(self.root)


def _file_name(sandbox_id: str) -> str:
    if _FILE_SAFE.fullmatch(sandbox_id):
        return sandbox_id
    import hashlib

    return "h" + hashlib.sha256(sandbox_id.encode()).hexdigest()[:32]


def _run_tool(*argv: str) -> str:
    # Disk limits only: shutil and subprocess are not on the exec path.
    import shutil
    import subprocess

    if shutil.which(argv[0]) is None:
        error = ProviderError(
            f"{argv[0]} is not installed: a disk limit needs e2fsprogs and util-linux, and root, on the "
            "Docker host; install them, or set SANDBOX_DISK_LIMIT_MB=0 to run without a disk limit"
        )
        error.retryable = False
        raise error
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_DISK_TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(f"{argv[0]} did not finish within {_DISK_TOOL_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        error = ProviderError(
            f"{shlex.join(argv)} failed ({done.stderr.strip() or done.returncode}); a disk limit needs "
            "root on the Docker host (loop devices), or set SANDBOX_DISK_LIMIT_MB=0 to run without one"
        )
        error.retryable = False
        raise error
    return done.stdout


# Lists a directory as NUL-separated "type<TAB>size<TAB>name" records (names may hold tabs and newlines,
# never NUL); exit 3 when nothing is there, 4 when it is not a directory.
_LIST_SCRIPT = r"""
[[ -e $1 || -L $1 ]] || exit 3
[[ -d $1 ]] || exit 4
exec find "$1" -mindepth 1 -maxdepth 1 -printf '%y\t%s\t%P\0'
"""
_FIND_TYPES = {"f": "file", "d": "dir", "l": "symlink"}


def _raise_for_path(done: ExecResult, full: str) -> None:
    if done.exit_code == 3:
        raise FileNotFoundError(f"{full} does not exist in the sandbox")
    if done.exit_code == 4:
        raise NotADirectoryError(f"{full} in the sandbox is not a directory")


def _parse_listing(raw: bytes) -> list[FileEntry]:
    entries = []
    for record in raw.split(b"\0"):
        if not record:
            continue
        kind, size, name = record.split(b"\t", 2)
        entries.append(
            FileEntry(
                name=name.decode("utf-8", errors="surrogateescape"),
                type=_FIND_TYPES.get(kind.decode(), "other"),
                size=int(size),
            )
        )
    return sorted(entries, key=lambda e: e.name)


def _is_enospc(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "no space left on device" in text


class _NameTaken(ProviderError):
    """Another container holds the name ``sbx-<id>`` (typically a concurrent create)."""


class _BoundedOutput(OutputCollector):
    """Collects an exec's demultiplexed output, keeping at most ``limit`` bytes of each stream and
    handing every frame to the callbacks as it is read (in the reader thread)."""

    def __init__(
        self, limit: int, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> None:
        super().__init__(limit, on_stdout, on_stderr)
        self.error: BaseException | None = None

    def drain(self, frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
        # Past the limit the rest is still read (and streamed), so the command never blocks on a full pipe.
        try:
            for out, err in frames:
                self.add_stdout(out)
                self.add_stderr(err)
        except Exception as exc:  # handed to the caller's thread
            self.error = exc


def _labels(container: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = container.get("Config", {}).get("Labels") or {}
    return labels


def _status(docker_status: str) -> str:
    if docker_status in ("running", "restarting"):
        return "running"
    if docker_status == "paused":
        return "paused"
    return "stopped"


def _explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


# The SDK's errors are recognised without importing it: none can have been raised before it was loaded.
def _sdk_loaded() -> bool:
    return sys.modules.get("docker") is not None


def _is_engine_error(exc: BaseException) -> bool:
    """An error of either transport (which ``_mapped`` turns into a ProviderError)."""
    if isinstance(exc, EngineUnreachable | EngineTimeout | EngineAPIError):
        return True
    if not _sdk_loaded():
        return False
    import docker.errors
    import requests.exceptions

    return isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException)


def _is_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, EngineUnreachable):
        return True
    if not _sdk_loaded():
        return False
    import docker.errors
    import requests.exceptions

    return isinstance(exc, requests.exceptions.ConnectionError) or (
        isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)
    )


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, EngineAPIError):
        return exc.status_code == 404
    if not _sdk_loaded():
        return False
    import docker.errors

    return isinstance(exc, docker.errors.NotFound)


def _is_api_error(exc: BaseException) -> bool:
    if isinstance(exc, EngineAPIError):
        return True
    if not _sdk_loaded():
        return False
    import docker.errors

    return isinstance(exc, docker.errors.APIError)


class _OutputStream(Protocol):
    """An attached exec's demultiplexed output, ``(stdout, None)`` or ``(None, stderr)`` chunks."""

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]: ...

    def __next__(self) -> tuple[bytes | None, bytes | None]: ...

    def close(self) -> None: ...


class _ExecCalls(Protocol):
    """The engine calls of an exec, as DockerEngine makes them; _SdkExecCalls makes them with the SDK."""

    def inspect_container(self, ref: str) -> dict[str, Any]: ...

    def exec_create(
        self,
        ref: str,
        cmd: Sequence[str],
        *,
        user: str = "",
        environment: Sequence[str] | None = None,
        workdir: str | None = None,
    ) -> str: ...

    def exec_stream(self, exec_id: str) -> _OutputStream: ...

    def exec_run(self, exec_id: str) -> None: ...

    def exec_inspect(self, exec_id: str) -> dict[str, Any]: ...


class _SdkExecCalls:
    """The exec calls through the SDK's low-level client: for what DockerEngine does not speak (TLS,
    ssh://) and for a client handed in."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def inspect_container(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self._api.inspect_container(ref)
        return found

    def exec_create(
        self,
        ref: str,
        cmd: Sequence[str],
        *,
        user: str = "",
        environment: Sequence[str] | None = None,
        workdir: str | None = None,
    ) -> str:
        created = self._api.exec_create(ref, cmd, user=user, environment=environment, workdir=workdir)
        return str(created["Id"])

    def exec_stream(self, exec_id: str) -> _OutputStream:
        stream: _OutputStream = self._api.exec_start(exec_id, stream=True, demux=True)
        return stream

    def exec_run(self, exec_id: str) -> None:
        self._api.exec_start(exec_id)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self._api.exec_inspect(exec_id)
        return state
