"""The E2B sandbox provider (the production default), on the e2b SYNC SDK.

How the port maps onto E2B:

* A sandbox is one E2B sandbox from the kind's template (``name:tag``), labelled with metadata
  ``{"sandbox_lifecycle_id": <id>, "kind": <kind>, "managed": "1", "deployment": <deployment>}``; its E2B
  id is the provider ref. Every listing filters on the deployment, so stacks sharing one E2B team (staging
  and production on one API key) never see, and so never reconcile away, each other's sandboxes.
* Suspend is E2B's native pause (memory and filesystem); the snapshot key is the paused sandbox's own id,
  so resume is ``Sandbox.connect(id)`` and the ref stays the same. Deleting the snapshot kills the paused
  sandbox.
* E2B's own timeout pauses (never kills) a sandbox we forgot, and our idle timer should fire first: the E2B
  timeout defaults to the idle timeout plus a margin and is pushed forward while the sandbox is used.
* Egress is denied except for the kind's allow-list (E2B enforces it in its network layer).

Retries: only calls that are safe to repeat (list, get, pause, connect, kill, set-timeout, file reads and
whole-file writes, SIGKILL) are retried, with bounded exponential backoff, on network errors, 5xx and 429.
The SDK's own retry layer is switched off (``retries=0``) so this is the one policy, and ``create`` is never
retried: a create whose answer was lost may have made a sandbox, which the next create of that id in this
process looks up by its metadata first, and which E2B hands back to any later create (another process's
too) by the ``Idempotency-Key`` derived from our deployment and id, instead of making a second one.

Round trips: every call is one to E2B's cloud, so a call an operation does not need is not made. A
conversation (create, exec, suspend, resume, exec, suspend, destroy) makes the calls the raw SDK makes and
no more: ownership is checked from what we already know of a ref (we made it, or a listing or lookup showed
its metadata: metadata never changes and E2B never reuses an id), a ref's SDK handle is kept from create to
kill (pause and resume included), and a ref we killed is known to be gone. Only a ref this process has not
seen costs a lookup first (``GET /sandboxes/{id}``), which is what refuses another deployment's sandbox.

Secrets: the envs given to sandboxes and the API key are never logged, put in a message, or shown in a repr.

Model key: with ``SANDBOX_GATEWAY_PUBLIC_URL`` set, a sandbox never holds ``ANTHROPIC_API_KEY``. It gets the
gateway's URL as ``ANTHROPIC_BASE_URL`` and a per-sandbox token as ``ANTHROPIC_API_KEY``, at create and on
every command (a resume issues a new token, and E2B keeps the create-time envs, so the current one rides
with each command). The token is revoked on suspend, destroy and snapshot deletion. A process that did not
issue the ref's current token (a restarted backend, another replica) adds one of its own on its first
command, beside the older one, so processes handed that one keep working until the sandbox suspends.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import random
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import httpx
import tenacity
from e2b import (
    ALL_TRAFFIC,
    E2B,
    CommandExitException,
    FileNotFoundException,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    RateLimitException,
    Sandbox,
    SandboxException,
    SandboxInfo,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxQuery,
    SandboxState,
    SandboxUnreachableException,
    ServiceBusyException,
    TimeoutException,
)
from e2b.sandbox.filesystem.filesystem import SyncWriteEntry

# Parsed with every other setting (composition.settings); re-exported where the provider's users look.
from sandbox_lifecycle.adapters.composition.environ import (
    DEFAULT_EGRESS_ALLOW,
    DEPLOYMENT_NAME,
    egress_env_name,
)
from sandbox_lifecycle.adapters.composition.version import package_version
from sandbox_lifecycle.adapters.gateway.state import GatewayState, git_env
from sandbox_lifecycle.adapters.providers.e2b.processes import E2BProcesses
from sandbox_lifecycle.adapters.providers.e2b.settings import (
    DEFAULT_TEMPLATE_NAMES,
    SANDBOX_ENV_PASSTHROUGH,
    TEMPLATE_ENV,
    E2BSettings,
)
from sandbox_lifecycle.adapters.providers.tree import TransferCounter, extract_stream, pack_dir
from sandbox_lifecycle.core.errors import (
    CapacityExceeded,
    ForeignSandbox,
    ProviderError,
    ProviderLost,
)
from sandbox_lifecycle.core.kinds import HOME, KINDS, kind_spec
from sandbox_lifecycle.core.ports import (
    ExecResult,
    FileEntry,
    OutputCallback,
    ProcessInfo,
    ProviderCapabilities,
    ProviderInstance,
    SnapshotInfo,
    TransferReport,
)
from sandbox_lifecycle.core.streaming import OutputCollector

__all__ = [
    "DEFAULT_EGRESS_ALLOW",
    "DEFAULT_TEMPLATE_NAMES",
    "SANDBOX_ENV_PASSTHROUGH",
    "TEMPLATE_ENV",
    "E2BProvider",
    "E2BSettings",
    "egress_env_name",
    "idempotency_key",
    "package_version",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Metadata keys on every sandbox we create; `managed` lets one list call find all of ours.
META_ID = "sandbox_lifecycle_id"
META_KIND = "kind"
META_MANAGED = "managed"
META_DEPLOYMENT = "deployment"
# The same names the Docker provider accepts, so one SANDBOX_DEPLOYMENT works for either provider.
_DEPLOYMENT_NAME = DEPLOYMENT_NAME

# Bounds every paged listing: 1000 pages of 100 is far beyond any real fleet.
MAX_LIST_PAGES = 1000
# Bounds each per-ref memory (verified owners, killed refs, unsure creates); the oldest entry goes first,
# and forgetting one only costs a lookup the next time that ref is used.
MAX_REMEMBERED = 10_000


def idempotency_key(deployment: str, sandbox_id: str) -> str:
    """E2B wants 1-255 of ``[a-z0-9-]``; a digest of our id fits whatever the id looks like.

    The deployment is part of it: E2B deduplicates per team, and another deployment's sandbox of the same
    id must not be handed back to us as if we had made it."""
    return "sbx-" + hashlib.sha256(f"{deployment}/{sandbox_id}".encode()).hexdigest()[:48]


def _transient(error: BaseException) -> bool:
    """Whether repeating a safe call may help: network trouble, throttling, or a server-side failure."""
    if isinstance(error, httpx.TransportError | ServiceBusyException | RateLimitException):
        return True
    # The SDK raises these for envd answers, not for the REST API; they say the sandbox itself is away.
    if isinstance(error, SandboxNotRunningException | SandboxUnreachableException):
        return False
    status = getattr(error, "status_code", None)
    return isinstance(error, SandboxException) and isinstance(status, int) and status >= 500


# E2B answers a create past the team's concurrency limit with 429 (RateLimitException). A sandbox may
# free up within moments (another one pausing), so the create is retried a few times with backoff,
# bounded in count and time, then reported as CapacityExceeded, the same error as our own ceiling.
RATE_LIMIT_RETRIES = 4
_RATE_LIMIT_FIRST_S = 0.1


def _rate_limited(kind: str, create: Callable[[], T]) -> T:
    pause, waited = _RATE_LIMIT_FIRST_S, 0.0
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        try:
            return create()
        except RateLimitException:
            if attempt == RATE_LIMIT_RETRIES:
                break
            time.sleep(pause)
            waited += pause
            pause *= 2
    raise CapacityExceeded(kind, None, None, waited)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _provider_error(message: str, error: BaseException) -> ProviderError:
    wrapped = ProviderError(f"{message}: {_describe(error)}")
    # A 4xx (bad template, wrong key) will fail the same way again; the caller should not retry it.
    wrapped.retryable = _transient(error)
    return wrapped


@dataclass
class _Handle:
    sandbox: Sandbox
    kind: str | None
    extended_at: float
    # Paused by us: the handle is kept for the resume (which connects it again), but envd will not answer.
    paused: bool = False


@dataclass(frozen=True)
class _Owner:
    """Whose an E2B sandbox is, once verified: ours (this deployment's), of this sandbox id and kind."""

    sandbox_id: str
    kind: str | None


def _remember_bounded(memory: dict[str, T], key: str, value: T) -> None:
    """Insert as the newest entry, dropping the oldest beyond MAX_REMEMBERED (caller holds the lock)."""
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > MAX_REMEMBERED:
        del memory[next(iter(memory))]


def _resolve(handle: _Handle, path: str) -> str:
    """An absolute path under HOME: relative paths start at the kind's workdir (envd would resolve them
    against the user's home), as the Docker provider does; escapes are refused."""
    workdir = KINDS[handle.kind].workdir if handle.kind in KINDS else HOME
    full = posixpath.normpath(posixpath.join(workdir, path))
    if not full.startswith(HOME + "/"):
        raise ValueError(f"path {path!r} is outside the sandbox home {HOME}")
    return full


def _resolve_dir(handle: _Handle, path: str) -> str:
    """Like ``_resolve``, HOME itself allowed (listing or copying the whole home is fine)."""
    workdir = KINDS[handle.kind].workdir if handle.kind in KINDS else HOME
    full = posixpath.normpath(posixpath.join(workdir, path))
    return full if full == HOME else _resolve(handle, path)


_ENTRY_TYPES = {FileType.FILE: "file", FileType.DIR: "dir", FileType.SYMLINK: "symlink"}
# The sandbox user (uid/gid 1000 in both templates) owns every member of an upload.
_SANDBOX_OWNER = (1000, 1000)
# Bounds a directory's pack or unpack inside the sandbox.
_TRANSFER_TIMEOUT_S = 1800.0
# $1: the uploaded tar, $2: the target directory, both relative to HOME. The sandbox user extracts, so
# it owns what is written; the tar was built by pack_dir (no setuid bits, no devices, links inside).
_UNTAR_SCRIPT = 'mkdir -p -- "$2" && tar -x --no-same-owner -f "$1" -C "$2"'
# $1: the tar to write, $2: the directory to pack; exit 3: nothing there, 4: not a directory.
_TAR_SCRIPT = r"""
[[ -e $2 || -L $2 ]] || exit 3
[[ -d $2 ]] || exit 4
exec tar -c -f "$1" --exclude="${1##*/}" -C "$2" .
"""


class E2BProvider:
    name = "e2b"
    # A microVM; pause is a memory snapshot, so background processes run on after a resume.
    capabilities = ProviderCapabilities(
        isolation="microvm", pause_keeps_processes=True, egress_allow_list=True, ports=True
    )

    def __init__(self, settings: E2BSettings, *, deployment: str = "default") -> None:
        if not _DEPLOYMENT_NAME.fullmatch(deployment):
            raise ValueError(
                f"invalid deployment name {deployment!r} (SANDBOX_DEPLOYMENT): use 1-63 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        self._deployment = deployment
        self._settings = settings
        # Bound client: settings win over E2B_* variables of the process, and retries=0 leaves ours the
        # only retry policy (see the module docstring).
        self._sdk = E2B(
            api_key=settings.api_key,
            api_url=settings.api_url,
            sandbox_url=settings.sandbox_url,
            domain=settings.domain,
            request_timeout=settings.request_timeout,
            retries=0,
        ).Sandbox
        self._handles: dict[str, _Handle] = {}
        # Refs whose ownership is verified (see _check_owned); refs we killed; sandbox ids whose create
        # failed without saying whether E2B made the sandbox. All under _lock, all bounded.
        self._owners: dict[str, _Owner] = {}
        self._killed: dict[str, None] = {}
        self._unsure: dict[str, None] = {}
        self._lock = threading.Lock()
        # The model-API gateway, when sandboxes reach their model through it; ref -> the sandbox's
        # gateway env (its current token), under _lock.
        self._gateway = (
            GatewayState(settings.gateway_state_dir)
            if settings.gateway_url and settings.gateway_state_dir is not None
            else None
        )
        self._model_envs: dict[str, dict[str, str]] = {}

    # --- lifecycle ------------------------------------------------------------------------------------------

    def create(self, sandbox_id: str, kind: str) -> str:
        kind_spec(kind)
        with self._lock:
            unsure = sandbox_id in self._unsure
        # Only after a create of this id failed here is a listing worth its round trip: the create below
        # would hand the sandbox back by its idempotency key too, but a listing also finds it should E2B
        # have dropped the key since.
        existing = self._find(sandbox_id) if unsure else []
        if existing:
            ref = existing[0].sandbox_id
            with self._lock:
                self._unsure.pop(sandbox_id, None)
            log.info("e2b: sandbox %s already has E2B sandbox %s; reusing it", sandbox_id, ref)
            return ref
        template = self._settings.templates[kind]
        allow = list(self._settings.egress_allow.get(kind, ()))
        model_env = self._issue_model_env(sandbox_id)
        try:
            sandbox = _rate_limited(
                kind,
                lambda: self._sdk.create(
                    template=template,
                    timeout=self._settings.sandbox_timeout,
                    metadata={
                        META_ID: sandbox_id,
                        META_KIND: kind,
                        META_MANAGED: "1",
                        META_DEPLOYMENT: self._deployment,
                    },
                    envs={**self._settings.sandbox_envs, **model_env},
                    network={"allow_out": allow, "deny_out": [ALL_TRAFFIC]},
                    # Pause, never kill, on E2B's timeout; and only we resume (no wake-up on inbound traffic).
                    lifecycle={"on_timeout": "pause", "auto_resume": False},
                    idempotency_key=idempotency_key(self._deployment, sandbox_id),
                ),
            )
        except CapacityExceeded:
            # E2B refused it outright (429): nothing was made, and nothing is left to find.
            self._revoke_model_token(sandbox_id)
            raise
        except Exception as e:
            self._revoke_model_token(sandbox_id)
            with self._lock:
                _remember_bounded(self._unsure, sandbox_id, None)
            raise _provider_error(
                f"creating the E2B sandbox for {sandbox_id} from template {template} failed, and was not "
                "retried here (a retry of create finds the sandbox if it was made after all)",
                e,
            ) from e
        # The answer to our create is ours: E2B either made it with our metadata, or handed back the
        # one an earlier create made under the same idempotency key, which is this deployment's and id's.
        self._verified(sandbox.sandbox_id, _Owner(sandbox_id, kind))
        with self._lock:
            self._unsure.pop(sandbox_id, None)
        self._remember(sandbox, kind)
        self._keep_model_env(sandbox.sandbox_id, model_env)
        log.info("e2b: created E2B sandbox %s for %s from %s", sandbox.sandbox_id, sandbox_id, template)
        return sandbox.sandbox_id

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        # E2B's pause persists memory and filesystem before it releases the compute, so the port's order
        # (snapshot stored, then compute released) holds inside the one call. `snapshot_key` names Docker
        # archives; the E2B snapshot is the paused sandbox itself.
        self._check_owned(ref, sandbox_id)  # gone: the pause below says so
        with self._lock:
            handle = self._handles.get(ref)
            if handle is not None:
                handle.paused = True  # kept for the resume; until then envd calls must reconnect first
        try:
            paused = self._retrying(f"pause {ref}", lambda: self._sdk.pause(ref), (SandboxNotFoundException,))
        except SandboxNotFoundException as e:
            self._lost(ref)
            raise ProviderLost(f"E2B sandbox {ref} of {sandbox_id} is gone; there is nothing to pause") from e
        finally:
            # Paused or not, this token is done: a sandbox still running after a failed pause gets a new
            # one with its next command.
            self._revoke_model_token(sandbox_id, ref)
        log.info("e2b: %s E2B sandbox %s of %s", "paused" if paused else "already paused", ref, sandbox_id)
        return SnapshotInfo(key=ref, sha256=None, bytes=None)

    def resume(self, sandbox_id: str, kind: str, snapshot: SnapshotInfo) -> str:
        # Checked before connecting: connecting resumes a paused sandbox, another stack's included.
        self._check_owned(snapshot.key, sandbox_id)
        sandbox = self._connect(snapshot.key, f"resume {sandbox_id}")
        self._remember(sandbox, kind)
        # A new token: the one from before the suspend was revoked and stays so.
        self._keep_model_env(sandbox.sandbox_id, self._issue_model_env(sandbox_id))
        log.info("e2b: resumed E2B sandbox %s of %s", sandbox.sandbox_id, sandbox_id)
        return sandbox.sandbox_id

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        self._revoke_model_token(sandbox_id, ref)
        if ref is not None:
            if self._check_owned(ref, sandbox_id) is None:
                return  # gone already
            refs = [ref]
        elif (known := self._known_ref(sandbox_id)) is not None:
            # A suspended record holds no ref, but we made or saw its sandbox: that one is the sandbox's
            # (a create of ours makes at most one per id), so no listing is needed to find it.
            refs = [known]
        else:
            refs = [info.sandbox_id for info in self._find(sandbox_id)]  # the listing is ours only
        for each in refs:
            self._kill(each, sandbox_id)

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        # The key is a sandbox id that a resume brings back to life under the same id, so killing it is
        # only deleting a snapshot while it is paused; a running one is a live workspace, left alone.
        if self._was_killed(snapshot.key):
            return  # destroyed with its sandbox (the service deletes a suspended one's snapshot after)
        info = self._owned_info(snapshot.key, None)
        if info is None:
            return
        if info.state != SandboxState.PAUSED:
            log.warning(
                "e2b: not deleting snapshot %s: the sandbox is %s again", snapshot.key, info.state.value
            )
            return
        self._kill(snapshot.key, info.metadata.get(META_ID, "?"))

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        if self._was_killed(snapshot.key):
            return False
        info = self._info(snapshot.key)
        # Another deployment's paused sandbox is not a snapshot of ours (as a Docker archive under another
        # deployment's prefix is invisible to us).
        return info is not None and info.state == SandboxState.PAUSED and self._foreign(info, None) is None

    # --- inside a running sandbox --------------------------------------------------------------------------

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
        if timeout <= 0:
            raise ValueError(f"exec timeout must be positive, got {timeout!r}")
        handle = self._handle(ref)
        env = self.command_env(ref, env)
        cmd = shlex.join(command)
        workdir = cwd or (KINDS[handle.kind].workdir if handle.kind in KINDS else None)
        limit = self._settings.max_output_bytes if max_output_bytes is None else max_output_bytes
        # The SDK hands over decoded text as each process event arrives (in its reading thread).
        output = OutputCollector(limit, on_stdout, on_stderr)
        try:
            # Started in the background so we hold the pid: E2B's `timeout` only drops our stream, the
            # command would run on in the sandbox unless we kill it.
            process = handle.sandbox.commands.run(
                cmd,
                background=True,
                envs=dict(env) if env else None,
                cwd=workdir,
                user=self._settings.user,
                timeout=timeout,
                retain_output=False,
            )
        except (SandboxNotRunningException, SandboxUnreachableException) as e:
            self._forget(ref)
            raise ProviderError(f"E2B sandbox {ref} is not reachable to run {cmd!r}: {_describe(e)}") from e
        except TimeoutException as e:
            raise ProviderError(
                f"command {cmd!r} did not start in E2B sandbox {ref} within {timeout:g}s; "
                "whether it runs is unknown"
            ) from e
        except SandboxException as e:
            raise _provider_error(f"E2B sandbox {ref} refused to run {cmd!r}", e) from e
        try:
            process.wait(
                on_stdout=lambda text: output.add_stdout(text.encode()),
                on_stderr=lambda text: output.add_stderr(text.encode()),
            )
            exit_code = 0
        except CommandExitException as e:
            exit_code = e.exit_code
        except (SandboxNotRunningException, SandboxUnreachableException) as e:
            self._forget(ref)
            raise ProviderError(f"E2B sandbox {ref} went away while running {cmd!r}: {_describe(e)}") from e
        except TimeoutException as e:
            try:
                self._retrying(
                    f"kill pid {process.pid} in {ref}", lambda: handle.sandbox.commands.kill(process.pid)
                )
            except Exception as kill_error:
                raise ProviderError(
                    f"command {cmd!r} timed out after {timeout:g}s in E2B sandbox {ref} and could not be "
                    f"killed ({_describe(kill_error)}); it may still be running"
                ) from e
            raise output.timed_out(cmd, timeout) from e
        except SandboxException as e:
            raise _provider_error(f"running {cmd!r} in E2B sandbox {ref} failed", e) from e
        return output.result(exit_code)

    def write_file(self, ref: str, path: str, data: bytes) -> None:
        handle = self._handle(ref)
        path = _resolve(handle, path)
        # A whole-file write is idempotent, so it is as safe to repeat as a read.
        self._retrying(
            f"write {path} in {ref}", lambda: handle.sandbox.files.write(path, data, user=self._settings.user)
        )

    def read_file(self, ref: str, path: str) -> bytes:
        handle = self._handle(ref)
        path = _resolve(handle, path)
        limit = self._settings.max_file_bytes

        def read() -> bytes:
            chunks: list[bytes] = []
            size = 0
            with handle.sandbox.files.read(path, format="stream", user=self._settings.user) as stream:
                for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise ProviderError(f"{path} in E2B sandbox {ref} is larger than {limit} bytes")
                    chunks.append(chunk)
            return b"".join(chunks)

        try:
            return self._retrying(f"read {path} in {ref}", read, (FileNotFoundException,))
        except FileNotFoundException as e:
            raise FileNotFoundError(f"{path} does not exist in E2B sandbox {ref}") from e

    def write_files(self, ref: str, files: Mapping[str, bytes]) -> None:
        if not files:
            return
        handle = self._handle(ref)
        entries = [SyncWriteEntry(path=_resolve(handle, path), data=data) for path, data in files.items()]
        # One multipart request for all of them; whole-file writes, so as safe to repeat as one.
        self._retrying(
            f"write {len(entries)} files in {ref}",
            lambda: handle.sandbox.files.write_files(entries, user=self._settings.user),
        )

    def remove(self, ref: str, path: str) -> None:
        handle = self._handle(ref)
        full = _resolve(handle, path)
        try:
            self._retrying(
                f"remove {full} in {ref}",
                lambda: handle.sandbox.files.remove(full, user=self._settings.user),
                (NotFoundException,),
            )
        except NotFoundException:
            return  # gone already is what the caller asked for

    def list_dir(self, ref: str, path: str) -> list[FileEntry]:
        handle = self._handle(ref)
        full = _resolve_dir(handle, path)
        try:
            found = self._retrying(
                f"list {full} in {ref}",
                lambda: handle.sandbox.files.list(full, depth=1, user=self._settings.user),
                (NotFoundException, InvalidArgumentException),
            )
        except NotFoundException as e:
            raise FileNotFoundError(f"{full} does not exist in E2B sandbox {ref}") from e
        except InvalidArgumentException as e:
            raise NotADirectoryError(f"{full} in E2B sandbox {ref} is not a directory") from e
        entries = [
            FileEntry(name=e.name, type=_ENTRY_TYPES.get(e.type, "other") if e.type else "other", size=e.size)
            for e in found
        ]
        return sorted(entries, key=lambda e: e.name)

    def exists(self, ref: str, path: str) -> bool:
        handle = self._handle(ref)
        full = _resolve_dir(handle, path)
        return self._retrying(
            f"stat {full} in {ref}", lambda: handle.sandbox.files.exists(full, user=self._settings.user)
        )

    def upload_dir(self, ref: str, local_dir: str, remote_dir: str) -> TransferReport:
        """E2B has no directory transfer: the tar goes up as one streamed file, and the sandbox user
        extracts it with ``tar``, so everything it writes is theirs. Plain tar, not zstd: nothing is
        assumed of the template beyond GNU tar, and workspaces of generated or binary files gain little.

        Paths in the command are relative to HOME (its cwd): the temporary file lives there, not in
        /tmp, so the extraction never depends on where the sandbox mounts its tmpfs."""
        handle = self._handle(ref)
        full = _resolve_dir(handle, remote_dir)
        counter = TransferCounter()
        chunks = pack_dir(local_dir, counter, owner=_SANDBOX_OWNER)
        staged = f".sandbox-lifecycle-upload-{uuid.uuid4().hex}.tar"
        try:
            try:
                # A stream is sent as it is read (octet-stream, chunked); never retried: it is consumed.
                handle.sandbox.files.write(f"{HOME}/{staged}", chunks, user=self._settings.user)
            except SandboxException as e:
                raise _provider_error(f"uploading to {full} in E2B sandbox {ref} failed", e) from e
            done = self.exec(
                ref,
                ["bash", "-c", _UNTAR_SCRIPT, "bash", staged, posixpath.relpath(full, HOME)],
                timeout=_TRANSFER_TIMEOUT_S,
                cwd=HOME,
            )
            if done.exit_code != 0:
                raise ProviderError(
                    f"extracting the upload to {full} in E2B sandbox {ref} failed: {done.stderr}"
                )
        finally:
            self._remove_quietly(handle, staged)
        return counter.report()

    def download_dir(self, ref: str, remote_dir: str, local_dir: str) -> TransferReport:
        """``tar -c`` into a temporary file in the sandbox, then one streamed read of it. The stream is
        the sandbox's to forge (it could swap the file), so ``extract_stream`` trusts none of it."""
        handle = self._handle(ref)
        full = _resolve_dir(handle, remote_dir)
        staged = f".sandbox-lifecycle-download-{uuid.uuid4().hex}.tar"
        try:
            done = self.exec(
                ref,
                ["bash", "-c", _TAR_SCRIPT, "bash", staged, posixpath.relpath(full, HOME)],
                timeout=_TRANSFER_TIMEOUT_S,
                cwd=HOME,
            )
            if done.exit_code == 3:
                raise FileNotFoundError(f"{full} does not exist in E2B sandbox {ref}")
            if done.exit_code == 4:
                raise NotADirectoryError(f"{full} in E2B sandbox {ref} is not a directory")
            # GNU tar exits 1 when a file changed while it was read; the archive is still whole.
            if done.exit_code not in (0, 1):
                raise ProviderError(f"packing {full} in E2B sandbox {ref} failed: {done.stderr}")
            try:
                stream = handle.sandbox.files.read(
                    f"{HOME}/{staged}", format="stream", user=self._settings.user
                )
            except SandboxException as e:
                raise _provider_error(f"downloading {full} from E2B sandbox {ref} failed", e) from e
            with stream:
                try:
                    return extract_stream(stream, local_dir, top=".")
                except (SandboxException, httpx.HTTPError) as e:
                    raise _provider_error(f"downloading {full} from E2B sandbox {ref} failed", e) from e
        finally:
            self._remove_quietly(handle, staged)

    def _remove_quietly(self, handle: _Handle, staged: str) -> None:
        try:
            handle.sandbox.files.remove(f"{HOME}/{staged}", user=self._settings.user)
        except NotFoundException:
            pass
        except Exception as e:  # a leftover in the home, not a failed transfer
            log.warning("e2b: could not remove the transfer file %s: %s", staged, _describe(e))

    # --- background processes and ports (see e2b_processes.py) ---------------------------------------------

    def start(
        self,
        ref: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ProcessInfo:
        return E2BProcesses(self).start(ref, command, env=env, cwd=cwd)

    def processes(self, ref: str) -> list[ProcessInfo]:
        return E2BProcesses(self).processes(ref)

    def process_output(self, ref: str, pid: str) -> tuple[bytes, bytes]:
        return E2BProcesses(self).process_output(ref, pid)

    def wait_process(self, ref: str, pid: str, timeout: float) -> int:
        return E2BProcesses(self).wait_process(ref, pid, timeout)

    def kill_process(self, ref: str, pid: str) -> None:
        E2BProcesses(self).kill_process(ref, pid)

    def last_activity(self, ref: str) -> datetime | None:
        return E2BProcesses(self).last_activity(ref)

    def url(self, ref: str, port: int) -> str:
        return E2BProcesses(self).url(ref, port)

    # --- what E2B holds (for the reconciler) ---------------------------------------------------------------

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        found = [self._instance(info) for info in self._find(sandbox_id)]
        # Should there ever be two (a create raced), the running one is the one in use.
        found.sort(key=lambda i: i.status != "running")
        return found[0] if found else None

    def list_instances(self) -> list[ProviderInstance]:
        return [self._instance(info) for info in self._list({})]

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        return [
            (info.metadata.get(META_ID, ""), SnapshotInfo(key=info.sandbox_id, sha256=None, bytes=None))
            for info in self._list({}, [SandboxState.PAUSED])
        ]

    # --- internals ------------------------------------------------------------------------------------------

    def _retrying(self, what: str, call: Callable[[], T], passthrough: tuple[type[Exception], ...] = ()) -> T:
        """Run a call that is safe to repeat; transient failures are retried with capped, jittered backoff.

        What still fails becomes a ProviderError (``retryable`` when it was transient), except the
        ``passthrough`` errors the caller maps itself (a 404 means something different per call).
        """
        settings = self._settings

        def worth_repeating(error: BaseException) -> bool:
            # Our own ProviderError (a size limit) is final, and passthrough errors are the caller's.
            return not isinstance(error, (*passthrough, ProviderError)) and _transient(error)

        def backoff(state: tenacity.RetryCallState) -> float:
            # Doubling from the base delay up to the cap, with jitter so replicas do not retry in step.
            growth: float = 2.0 ** (state.attempt_number - 1)
            delay = min(settings.retry_base_delay * growth, settings.retry_max_delay)
            return delay * random.uniform(0.5, 1.0)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "e2b: %s failed (attempt %d of %d): %s; retrying in %.2fs",
                what,
                state.attempt_number,
                attempts,
                _describe(error) if error else "?",
                state.upcoming_sleep,
            )

        attempts = max(1, settings.retry_attempts)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=backoff,
            retry=tenacity.retry_if_exception(worth_repeating),
            before_sleep=before_sleep,
            reraise=True,
            sleep=time.sleep,
        )
        try:
            return retrying(call)
        except passthrough:
            raise
        except ProviderError:
            raise
        except Exception as e:
            raise _provider_error(f"E2B {what} failed", e) from e

    def _list(self, metadata: dict[str, str], states: list[SandboxState] | None = None) -> list[SandboxInfo]:
        """Our sandboxes (managed, of this deployment) that also carry ``metadata``, in ``states``."""
        ours = {META_MANAGED: "1", META_DEPLOYMENT: self._deployment, **metadata}
        query = SandboxQuery(metadata=ours, state=states or [SandboxState.RUNNING, SandboxState.PAUSED])
        paginator = self._sdk.list(query=query, limit=self._settings.list_page_size)
        found: list[SandboxInfo] = []
        for _ in range(MAX_LIST_PAGES):
            if not paginator.has_next:
                return found
            found.extend(self._retrying("list sandboxes", paginator.next_items))
        raise ProviderError(f"listing E2B sandboxes did not end within {MAX_LIST_PAGES} pages")

    def _find(self, sandbox_id: str) -> list[SandboxInfo]:
        found = self._list({META_ID: sandbox_id})
        for info in found:
            self._record_owner(info)
        return found

    def _foreign(self, info: SandboxInfo, sandbox_id: str | None) -> str | None:
        """Why the E2B sandbox is not ours (this deployment's, and ``sandbox_id``'s when given), or None."""
        meta = info.metadata or {}
        owner = meta.get(META_DEPLOYMENT)
        if meta.get(META_MANAGED) != "1" or not meta.get(META_ID):
            return "it is not a sandbox-lifecycle sandbox"
        if owner != self._deployment:
            return f"deployment {owner!r}, not {self._deployment!r}"
        if sandbox_id is not None and meta.get(META_ID) != sandbox_id:
            return f"it is sandbox {meta.get(META_ID)}'s"
        return None

    def _owned_info(self, ref: str, sandbox_id: str | None) -> SandboxInfo | None:
        """The E2B sandbox's info after checking its metadata is ours; None when E2B no longer has it.

        Every call that acts on an E2B sandbox by its id checks first: stacks sharing one E2B team see
        each other's sandboxes by id, and a copied database holds the original's ids."""
        info = self._info(ref)
        if info is not None and (why := self._foreign(info, sandbox_id)) is not None:
            raise ForeignSandbox(sandbox_id or info.metadata.get(META_ID, "?"), f"E2B sandbox {ref}", why)
        if info is not None:
            self._record_owner(info)
        return info

    def _check_owned(self, ref: str, sandbox_id: str | None) -> _Owner | None:
        """Whose the E2B sandbox is, after checking it is ours (and ``sandbox_id``'s when given); None when
        it is gone. The same check as :meth:`_owned_info`, without its lookup when the ref is known.

        Known means verified before: the answer to our own create, or metadata a lookup or listing
        showed. That stays true for the ref's life, since E2B metadata is fixed at create and an id is
        never reused; so another deployment's ref, which we never made and whose metadata never passed,
        always costs the lookup that refuses it."""
        with self._lock:
            owner = self._owners.get(ref)
            killed = ref in self._killed
        if killed:
            return None
        if owner is None:
            info = self._owned_info(ref, sandbox_id)
            return None if info is None else _Owner(info.metadata[META_ID], info.metadata.get(META_KIND))
        if sandbox_id is not None and owner.sandbox_id != sandbox_id:
            raise ForeignSandbox(sandbox_id, f"E2B sandbox {ref}", f"it is sandbox {owner.sandbox_id}'s")
        return owner

    def _record_owner(self, info: SandboxInfo) -> None:
        """Remember a listed or looked-up sandbox's owner, if it is ours."""
        if self._foreign(info, None) is None:
            self._verified(info.sandbox_id, _Owner(info.metadata[META_ID], info.metadata.get(META_KIND)))

    def _verified(self, ref: str, owner: _Owner) -> None:
        with self._lock:
            _remember_bounded(self._owners, ref, owner)

    def _known_ref(self, sandbox_id: str) -> str | None:
        """The E2B sandbox we know to be ``sandbox_id``'s, newest first, if any."""
        with self._lock:
            for ref in reversed(self._owners):  # bounded by MAX_REMEMBERED
                if self._owners[ref].sandbox_id == sandbox_id:
                    return ref
        return None

    def _was_killed(self, ref: str) -> bool:
        with self._lock:
            return ref in self._killed

    def _lost(self, ref: str) -> None:
        """E2B no longer has the ref: nothing of it is worth keeping (the id will never come back)."""
        with self._lock:
            self._handles.pop(ref, None)
            self._owners.pop(ref, None)
            _remember_bounded(self._killed, ref, None)

    def _info(self, ref: str) -> SandboxInfo | None:
        try:
            return self._retrying(f"get {ref}", lambda: self._sdk.get_info(ref), (SandboxNotFoundException,))
        except SandboxNotFoundException:
            return None

    @staticmethod
    def _instance(info: SandboxInfo) -> ProviderInstance:
        return ProviderInstance(
            sandbox_id=info.metadata.get(META_ID, ""),
            ref=info.sandbox_id,
            kind=info.metadata.get(META_KIND),
            status=info.state.value,
        )

    def _kill(self, ref: str, sandbox_id: str) -> None:
        if sandbox_id != "?":
            self._revoke_model_token(sandbox_id, ref)
        self._forget(ref)
        killed = self._retrying(f"kill {ref}", lambda: self._sdk.kill(ref))
        self._lost(ref)  # killed now or gone before: either way E2B no longer has it
        log.info("e2b: %s E2B sandbox %s of %s", "killed" if killed else "already gone:", ref, sandbox_id)

    def _connect(self, ref: str, what: str) -> Sandbox:
        """Attach to the sandbox, resuming it if paused, with our timeout (E2B would otherwise set 5 min).

        A handle we kept over our own pause is connected again in place, as the SDK does after its own
        pause: the same one call, and the handle (its envd clients on the SDK's shared connection pool)
        stays the one handle of the ref."""
        timeout = self._settings.sandbox_timeout
        with self._lock:
            handle = self._handles.get(ref)
        connect: Callable[[], Sandbox] = (
            (lambda: self._sdk.connect(ref, timeout=timeout))
            if handle is None
            else (lambda: handle.sandbox.connect(timeout=timeout))
        )
        try:
            return self._retrying(what, connect, (SandboxNotFoundException,))
        except SandboxNotFoundException as e:
            self._lost(ref)
            raise ProviderLost(f"E2B no longer has sandbox {ref}; its workspace cannot come back") from e

    def _remember(self, sandbox: Sandbox, kind: str | None) -> None:
        with self._lock:
            self._handles[sandbox.sandbox_id] = _Handle(sandbox, kind, time.monotonic())

    def _forget(self, ref: str) -> None:
        with self._lock:
            self._handles.pop(ref, None)

    def _handle(self, ref: str) -> _Handle:
        """The SDK object for a running sandbox, attaching once per process, and keeping E2B's timer ahead.

        Using a sandbox does not extend its E2B timeout, so a sandbox in steady use is extended once a
        third of the timeout has passed: one small call per ten minutes or so, not one per exec.
        """
        with self._lock:
            handle = self._handles.get(ref)
        if handle is None or handle.paused:
            # Checked before connecting, which would resume another stack's paused sandbox.
            owner = self._check_owned(ref, None)
            sandbox = self._connect(ref, f"connect {ref}")
            self._remember(sandbox, owner.kind if owner else None)
            with self._lock:
                return self._handles[ref]
        if time.monotonic() - handle.extended_at > self._settings.sandbox_timeout / 3:
            try:
                self._retrying(
                    f"extend {ref}",
                    lambda: self._sdk.set_timeout(ref, self._settings.sandbox_timeout),
                    (SandboxNotFoundException,),
                )
            except SandboxNotFoundException as e:
                self._forget(ref)
                raise ProviderLost(f"E2B no longer has sandbox {ref}") from e
            handle.extended_at = time.monotonic()
        return handle

    # --- the model-API gateway ------------------------------------------------------------------------------

    def command_env(self, ref: str, env: Mapping[str, str] | None) -> dict[str, str] | None:
        """The env a command in the sandbox runs with: the caller's, plus the sandbox's current gateway
        token and URL when the gateway is on (they win: the real key must never be handed in)."""
        model_env = self._current_model_env(ref)
        merged = {**(env or {}), **model_env, **self._git_env(ref, model_env)}
        return merged or None

    def model_activity(self, ref: str) -> datetime | None:
        """When the gateway last relayed a model call of the sandbox behind ``ref`` (None: never, or no
        gateway). For the provider's ``last_activity``: a model call is the sandbox's activity."""
        if self._gateway is None:
            return None
        owner = self._check_owned(ref, None)
        return None if owner is None else self._gateway.model_activity(owner.sandbox_id)

    def _git_env(self, ref: str, model_env: Mapping[str, str]) -> dict[str, str]:
        """Git through the gateway for the hosts the sandbox was granted a git credential for."""
        token = model_env.get("ANTHROPIC_API_KEY")
        owner = self._check_owned(ref, None) if self._gateway is not None and token else None
        if owner is None or self._gateway is None or not token or self._settings.gateway_url is None:
            return {}
        return git_env(self._settings.gateway_url, token, self._gateway.git_hosts(owner.sandbox_id))

    def _issue_model_env(self, sandbox_id: str, *, replace: bool = True) -> dict[str, str]:
        if self._gateway is None or self._settings.gateway_url is None:
            return {}
        return self._gateway.sandbox_env(sandbox_id, self._settings.gateway_url, replace=replace)

    def _keep_model_env(self, ref: str, model_env: dict[str, str]) -> None:
        if model_env:
            with self._lock:
                _remember_bounded(self._model_envs, ref, model_env)

    def _current_model_env(self, ref: str) -> dict[str, str]:
        if self._gateway is None:
            return {}
        with self._lock:
            known = self._model_envs.get(ref)
        if known is not None:
            return known
        # This process did not issue the ref's token (a restart, another replica): add one of its own,
        # leaving the other valid for the processes it was handed to.
        owner = self._check_owned(ref, None)
        if owner is None:
            return {}
        model_env = self._issue_model_env(owner.sandbox_id, replace=False)
        self._keep_model_env(ref, model_env)
        return model_env

    def _revoke_model_token(self, sandbox_id: str, ref: str | None = None) -> None:
        if self._gateway is None:
            return
        with self._lock:
            if ref is not None:
                self._model_envs.pop(ref, None)
        try:
            self._gateway.revoke(sandbox_id)
        except (OSError, ValueError) as e:
            log.error("e2b: could not revoke the gateway token of %s: %s", sandbox_id, _describe(e))
