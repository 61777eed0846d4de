"""This deployment's containers as the Docker provider and its helpers (exec, files, processes, the
suspend's archive) reach them: the engine clients, the ownership check every call makes first, the
mapping of engine errors, and paths inside a sandbox.

Containers are named ``sbx-<sandbox id>`` and labelled with the sandbox id, kind and deployment. Every
call that acts on a container checks first that it carries this deployment's label (and the sandbox's
id, where the call has it), and raises ForeignSandbox otherwise: a copied database holds the original
deployment's ids and refs.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandbox_lifecycle.adapters.providers.docker.engine import (
    DockerEngine,
    ExecCalls,
    SdkExecCalls,
    engine_from_environ,
)
from sandbox_lifecycle.adapters.providers.docker.errors import (
    START_ENGINE_HINT,
    is_engine_error,
    is_not_found,
    mapped,
)
from sandbox_lifecycle.core.errors import ForeignSandbox, ProviderError, ProviderLost
from sandbox_lifecycle.core.kinds import HOME, KINDS, kind_spec

if TYPE_CHECKING:
    import docker

LABEL_ID = "sandbox-lifecycle.id"
LABEL_KIND = "sandbox-lifecycle.kind"
LABEL_MANAGED = "sandbox-lifecycle.managed"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
# The host file backing the home filesystem of a container with a disk limit (see disks.py).
LABEL_DISK = "sandbox-lifecycle.disk"
# The uid/gid the images create user `sandbox` with; everything runs as it, never as root.
SANDBOX_USER = "1000:1000"
SANDBOX_UID = 1000
SANDBOX_GID = 1000


@dataclass(frozen=True, slots=True)
class DockerLimits:
    """Per-container resource limits and per-call output bounds."""

    memory_bytes: int = 2 * 1024**3
    nano_cpus: int = 1_000_000_000  # one CPU
    pids: int = 512
    tmp_size: str = "256m"
    max_output_bytes: int = 1024**2  # per stream per exec
    max_read_bytes: int = 16 * 1024**2  # per read_file


class Containers:
    """The containers of one deployment on one engine.

    ``client`` is the docker SDK's, connected on first use (so building a provider, e.g. for
    `sandboxctl ls`, needs no running engine); the calls of an exec go through ``exec_calls``: the stdlib
    engine client where it reaches the engine the SDK would and no client was handed in, the SDK
    otherwise. ``engine_env`` holds the variables that name the engine (DOCKER_HOST, DOCKER_TLS_VERIFY,
    DOCKER_CERT_PATH), read by both.
    """

    def __init__(
        self,
        deployment: str,
        *,
        client: docker.DockerClient | None,
        engine_env: Mapping[str, str],
    ) -> None:
        self.deployment = deployment
        self._client = client
        self._client_lock = threading.Lock()
        self._engine_env = engine_env
        self.engine: DockerEngine | None = None if client is not None else engine_from_environ(engine_env)
        # ref -> kind of the containers checked to be ours (labels never change and ids are never reused,
        # so one check per container holds): an exec's default cwd and ownership without an inspect per call.
        self._kinds: dict[str, str] = {}

    @property
    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                import docker  # why: the SDK (with requests) costs more than an exec, which never needs it

                try:
                    self._client = docker.from_env(environment=self._engine_env)
                except docker.errors.DockerException as exc:
                    raise ProviderError(
                        f"the Docker engine is unreachable ({exc}); {START_ENGINE_HINT}"
                    ) from exc
            return self._client

    @property
    def exec_calls(self) -> ExecCalls:
        """What exec and inspect go through: the stdlib engine client, or the SDK where it cannot go."""
        if self.engine is not None:
            return self.engine
        return SdkExecCalls(self.client.api)

    @contextmanager
    def errors(self, action: str, ref: str | None = None, *, missing_ok: bool = False) -> Iterator[None]:
        """Translate engine errors (either transport's) into ProviderError subclasses.

        With ``missing_ok``, a 404 for a path inside a live container becomes FileNotFoundError.
        """
        try:
            yield
        except Exception as exc:
            if not is_engine_error(exc):
                raise
            if missing_ok and is_not_found(exc) and ref and self.inspect(ref):
                raise FileNotFoundError(f"{action}: no such file in the sandbox") from exc
            raise mapped(exc, action, ref) from exc

    def inspect(self, name_or_id: str) -> dict[str, Any] | None:
        try:
            with self.errors(f"inspect container {name_or_id}"):
                found: dict[str, Any] = self.exec_calls.inspect_container(name_or_id)
                return found
        except ProviderLost:
            return None

    def find(self, sandbox_id: str) -> dict[str, Any] | None:
        """The container named for this sandbox; one of another deployment is refused, never adopted.

        Names are unique per engine, so the other deployment's container blocks ours; reusing, reporting
        or removing it would take over or destroy their workspace. A managed container that carries no
        deployment (made before deployments were labelled) cannot be told apart from another stack's, so
        it is refused the same way. A container of that name that we do not manage at all is left to the
        provider's create to refuse, with its own message.
        """
        found = self.inspect(f"sbx-{sandbox_id}")
        if found is not None and labels_of(found).get(LABEL_MANAGED) == "1":
            self.check_owner(found, sandbox_id, f"container sbx-{sandbox_id}")
        return found

    def check_owner(self, found: Mapping[str, Any], sandbox_id: str | None, what: str) -> None:
        """Raise ForeignSandbox unless the container carries this deployment's label (and, when given,
        this sandbox's id). Called before every operation that acts on a container."""
        labels = labels_of(found)
        owner = labels.get(LABEL_DEPLOYMENT)
        holder = labels.get(LABEL_ID)
        if labels.get(LABEL_MANAGED) != "1" or holder is None:
            detail = "it is not a sandbox-lifecycle container"
        elif owner is None:
            detail = "it carries no deployment label (made before deployments were labelled)"
        elif owner != self.deployment:
            detail = f"deployment {owner!r}, not {self.deployment!r}"
        elif sandbox_id is not None and holder != sandbox_id:
            detail = f"it is sandbox {holder}'s"
        else:
            return
        raise ForeignSandbox(sandbox_id or holder or "?", what, detail)

    def owned(self, ref: str, sandbox_id: str | None = None) -> str:
        """The kind of container ``ref`` once it is checked to be ours; ProviderLost when it is gone.

        exec and the file calls only get the ref. The record that holds it was written by create or
        resume for one sandbox, and container ids are never reused, so a ref of this deployment is that
        sandbox's; the deployment check is what stops a copied database from reaching the original's."""
        kind = self._kinds.get(ref)
        if kind is not None and sandbox_id is None:
            return kind
        found = self.inspect(ref)
        if found is None:
            raise ProviderLost(f"sandbox container {ref[:12]} no longer exists")
        self.check_owner(found, sandbox_id, f"container {ref[:12]}")
        kind = labels_of(found).get(LABEL_KIND, "")
        self._kinds[ref] = kind
        return kind

    def remember(self, ref: str, kind: str) -> None:
        """A container we made or checked ourselves is ours, of ``kind``."""
        self._kinds[ref] = kind

    def remove(self, ref: str) -> None:
        """Remove the container and its home volume; gone already is success."""
        self._kinds.pop(ref, None)
        try:
            with self.errors(f"remove container {ref[:12]}"):
                self.client.api.remove_container(ref, v=True, force=True)
        except ProviderLost:
            pass

    def workdir(self, ref: str) -> str:
        kind = self.owned(ref)
        return kind_spec(kind).workdir if kind in KINDS else HOME

    def resolve(self, ref: str, path: str) -> str:
        """An absolute path under HOME: relative paths start at the kind's workdir; escapes are refused."""
        full = posixpath.normpath(posixpath.join(self.workdir(ref), path))
        if not full.startswith(HOME + "/"):
            raise ValueError(f"path {path!r} is outside the sandbox home {HOME}")
        return full

    def resolve_dir(self, ref: str, path: str) -> str:
        """Like ``resolve``, but HOME itself is allowed: listing or copying the whole home is fine; only
        writing a file named HOME is not."""
        full = posixpath.normpath(posixpath.join(self.workdir(ref), path))
        if full != HOME:
            return self.resolve(ref, path)
        return full


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a container or network, from a listing row (``Labels``) or an inspection
    (``Config.Labels`` for a container)."""
    labels = obj.get("Labels")
    if labels is None:
        labels = (obj.get("Config") or {}).get("Labels")
    return dict(labels or {})
