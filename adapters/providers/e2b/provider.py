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
* Public traffic is off: a sandbox's ports answer only requests carrying its traffic access token
  (``preview`` gives the URL and that header; ``url`` the URL alone). E2B sets this at create only, so
  no network update and no pause or resume changes it.
* Checkpoints (``E2B_CHECKPOINTS=1``, off by default): each suspend is a named E2B snapshot and the
  sandbox is killed; resume creates a sandbox from the snapshot (checkpoints.py).

Retries: only calls that are safe to repeat are retried (retry.py), and ``create`` is never retried: a
create whose answer was lost may have made a sandbox, which the next create of that id in this process
looks up by its metadata first, and which E2B hands back to any later create (another process's too) by
the ``Idempotency-Key`` derived from our deployment and id, instead of making a second one.

Round trips: every call is one to E2B's cloud, so a call an operation does not need is not made. A
conversation (create, exec, suspend, resume, exec, suspend, destroy) makes the calls the raw SDK makes and
no more (see sandboxes.py for what is remembered to keep it so).

Secrets: the envs given to sandboxes and the API key are never logged, put in a message, or shown in a repr.

Model key: with the model-API gateway on, a sandbox holds a per-sandbox token, never the key (gateway.py).

The calls inside a running sandbox are this module's neighbours': exec.py, files.py, processes.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

from e2b import (
    ALL_TRAFFIC,
    RateLimitException,
    Sandbox,
    SandboxInfo,
    SandboxNotFoundException,
    SandboxState,
)

# Parsed by the folder's settings module; re-exported where the provider's users look.
from sandbox_lifecycle.adapters.composition.environ import (
    DEFAULT_EGRESS_ALLOW,
    DEPLOYMENT_NAME,
    egress_env_name,
)
from sandbox_lifecycle.adapters.composition.version import package_version
from sandbox_lifecycle.adapters.egress.policy import check_allow
from sandbox_lifecycle.adapters.providers.delegating import DelegatingCalls
from sandbox_lifecycle.adapters.providers.e2b.checkpoints import (
    E2BCheckpoints,
    is_checkpoint_key,
    restore_error,
)
from sandbox_lifecycle.adapters.providers.e2b.exec import E2BExec
from sandbox_lifecycle.adapters.providers.e2b.files import E2BFiles
from sandbox_lifecycle.adapters.providers.e2b.gateway import ModelGateway
from sandbox_lifecycle.adapters.providers.e2b.processes import E2BProcesses
from sandbox_lifecycle.adapters.providers.e2b.retry import provider_error
from sandbox_lifecycle.adapters.providers.e2b.sandboxes import (
    META_DEPLOYMENT,
    META_ID,
    META_KIND,
    META_MANAGED,
    E2BSandboxes,
    Owner,
)
from sandbox_lifecycle.adapters.providers.e2b.settings import (
    DEFAULT_TEMPLATE_NAMES,
    SANDBOX_ENV_PASSTHROUGH,
    TEMPLATE_ENV,
    E2BSettings,
)
from sandbox_lifecycle.core.errors import CapacityExceeded, ProviderLost, Unsupported
from sandbox_lifecycle.core.kinds import kind_spec
from sandbox_lifecycle.core.ports import (
    ProviderCapabilities,
    ProviderInstance,
    SnapshotInfo,
)
from sandbox_lifecycle.core.preview import Preview
from sandbox_lifecycle.core.usage import Usage

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


def idempotency_key(deployment: str, sandbox_id: str) -> str:
    """E2B wants 1-255 of ``[a-z0-9-]``; a digest of our id fits whatever the id looks like.

    The deployment is part of it: E2B deduplicates per team, and another deployment's sandbox of the same
    id must not be handed back to us as if we had made it."""
    return "sbx-" + hashlib.sha256(f"{deployment}/{sandbox_id}".encode()).hexdigest()[:48]


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


class E2BProvider(DelegatingCalls):
    name = "e2b"
    # A microVM; pause (and a full snapshot) keeps memory, so background processes run on after a
    # resume. Every pause overwrites the one paused sandbox, so an earlier state can be restored only
    # with checkpoints on (each suspend a named snapshot; docs/checkpoints.md); otherwise rewind and fork
    # are refused.
    capabilities = ProviderCapabilities(
        isolation="microvm", pause_keeps_processes=True, egress_allow_list=True, ports=True
    )

    _processes: E2BProcesses  # narrower than the shared part: it also answers url()

    def __init__(self, settings: E2BSettings, *, deployment: str = "default") -> None:
        # The same names the Docker provider accepts, so one SANDBOX_DEPLOYMENT works for either provider.
        if not DEPLOYMENT_NAME.fullmatch(deployment):
            raise ValueError(
                f"invalid deployment name {deployment!r} (SANDBOX_DEPLOYMENT): use 1-63 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        self._deployment = deployment
        self._settings = settings
        self._sandboxes = E2BSandboxes(settings, deployment)
        self._gateway = ModelGateway(settings, self._sandboxes)
        self._exec = E2BExec(self._sandboxes, self._gateway)
        self._files = E2BFiles(self._sandboxes, self._exec)
        self._processes = E2BProcesses(self._sandboxes, self._gateway, self._exec)
        self._snapshots = E2BCheckpoints(self._sandboxes, self._create_from)
        if settings.checkpoints:
            self.capabilities = dataclasses.replace(E2BProvider.capabilities, checkpoints=True)

    # --- lifecycle ------------------------------------------------------------------------------------------

    def create(self, sandbox_id: str, kind: str) -> str:
        kind_spec(kind)
        unsure = self._sandboxes.is_unsure(sandbox_id)
        # Only after a create of this id failed here is a listing worth its round trip: the create below
        # would hand the sandbox back by its idempotency key too, but a listing also finds it should E2B
        # have dropped the key since.
        existing = self._sandboxes.find(sandbox_id) if unsure else []
        if existing:
            ref = existing[0].sandbox_id
            self._sandboxes.settled(sandbox_id)
            log.info("e2b: sandbox %s already has E2B sandbox %s; reusing it", sandbox_id, ref)
            return ref
        template = self._settings.templates[kind]
        model_env = self._gateway.issue(sandbox_id)
        try:
            sandbox = self._sdk_create(
                sandbox_id, kind, template, model_env, idempotency_key(self._deployment, sandbox_id)
            )
        except CapacityExceeded:
            # E2B refused it outright (429): nothing was made, and nothing is left to find.
            self._gateway.revoke(sandbox_id)
            raise
        except Exception as e:
            self._gateway.revoke(sandbox_id)
            self._sandboxes.unsure(sandbox_id)
            raise provider_error(
                f"creating the E2B sandbox for {sandbox_id} from template {template} failed, and was not "
                "retried here (a retry of create finds the sandbox if it was made after all)",
                e,
            ) from e
        # The answer to our create is ours: E2B either made it with our metadata, or handed back the
        # one an earlier create made under the same idempotency key, which is this deployment's and id's.
        self._sandboxes.verified(sandbox.sandbox_id, Owner(sandbox_id, kind))
        self._sandboxes.settled(sandbox_id)
        self._sandboxes.remember(sandbox, kind)
        self._gateway.keep(sandbox.sandbox_id, model_env)
        log.info("e2b: created E2B sandbox %s for %s from %s", sandbox.sandbox_id, sandbox_id, template)
        return sandbox.sandbox_id

    def _sdk_create(
        self,
        sandbox_id: str,
        kind: str | None,
        template: str,
        envs: dict[str, str],
        key: str | None,
        allow: Sequence[str] | None = None,
    ) -> Sandbox:
        """One create of ours (never retried here): our metadata, the kind's egress (or the log's list,
        for a resume from a checkpoint: its processes never run under a broader one), public traffic off."""
        if allow is not None:
            hosts = self._egress_hosts(kind, allow)
        else:
            hosts = list(self._settings.egress_allow.get(kind, ())) if kind else []
        meta = {META_ID: sandbox_id, META_MANAGED: "1", META_DEPLOYMENT: self._deployment}
        return _rate_limited(
            kind or "?",
            lambda: self._sandboxes.sdk.create(
                template=template,
                timeout=self._settings.sandbox_timeout,
                metadata={**meta, META_KIND: kind} if kind else meta,
                envs={**self._settings.sandbox_envs, **envs},
                # Ports answer only requests with the sandbox's traffic access token (see preview).
                network={"allow_out": hosts, "deny_out": [ALL_TRAFFIC], "allow_public_traffic": False},
                # Pause, never kill, on E2B's timeout; and only we resume (no wake-up on inbound traffic).
                lifecycle={"on_timeout": "pause", "auto_resume": False},
                idempotency_key=key,
            ),
        )

    def _create_from(
        self, sandbox_id: str, kind: str | None, snapshot: str, allow: Sequence[str] | None = None
    ) -> Sandbox:
        """A sandbox of ours from an E2B snapshot (checkpoints.py): a resume's (with the kind and a new
        gateway token, as any resume) or a fork copy's helper (no kind: nothing runs in it). No
        idempotency key: each resume of one checkpoint is a new sandbox; one whose answer was lost is
        an instance the log does not name, which the reconciler removes."""
        model_env = self._gateway.issue(sandbox_id) if kind else {}
        try:
            sandbox = self._sdk_create(sandbox_id, kind, snapshot, model_env, None, allow)
        except Exception:
            if kind:
                self._gateway.revoke(sandbox_id)
            raise
        self._sandboxes.verified(sandbox.sandbox_id, Owner(sandbox_id, kind))
        if kind:
            self._sandboxes.remember(sandbox, kind)
            self._gateway.keep(sandbox.sandbox_id, model_env)
        return sandbox

    def suspend(self, sandbox_id: str, ref: str, kind: str, snapshot_key: str) -> SnapshotInfo:
        if self.capabilities.checkpoints:
            return self._suspend_to_snapshot(sandbox_id, ref, snapshot_key)
        # E2B's pause persists memory and filesystem before it releases the compute, so the port's order
        # (snapshot stored, then compute released) holds inside the one call. `snapshot_key` names Docker
        # archives; the E2B snapshot is the paused sandbox itself.
        self._sandboxes.check_owned(ref, sandbox_id)  # gone: the pause below says so
        self._sandboxes.pausing(ref)
        try:
            paused = self._sandboxes.retrying(
                f"pause {ref}", lambda: self._sandboxes.sdk.pause(ref), (SandboxNotFoundException,)
            )
        except SandboxNotFoundException as e:
            self._sandboxes.lost(ref)
            raise ProviderLost(f"E2B sandbox {ref} of {sandbox_id} is gone; there is nothing to pause") from e
        finally:
            # Paused or not, this token is done: a sandbox still running after a failed pause gets a new
            # one with its next command.
            self._gateway.revoke(sandbox_id, ref)
        log.info("e2b: %s E2B sandbox %s of %s", "paused" if paused else "already paused", ref, sandbox_id)
        return SnapshotInfo(key=ref, sha256=None, bytes=None)

    def _suspend_to_snapshot(self, sandbox_id: str, ref: str, snapshot_key: str) -> SnapshotInfo:
        """The checkpoint's snapshot first, then the compute released (the port's order)."""
        self._sandboxes.check_owned(ref, sandbox_id)
        try:
            info = self._snapshots.take(ref, snapshot_key)
        except SandboxNotFoundException as e:
            self._sandboxes.lost(ref)
            raise ProviderLost(
                f"E2B sandbox {ref} of {sandbox_id} is gone; there is nothing to snapshot"
            ) from e
        self._kill(ref, sandbox_id)
        self._sandboxes.snapshotted(sandbox_id, True)
        log.info("e2b: snapshot %s taken of E2B sandbox %s of %s", snapshot_key, ref, sandbox_id)
        return info

    def resume(
        self, sandbox_id: str, kind: str, snapshot: SnapshotInfo, allow: Sequence[str] | None = None
    ) -> str:
        if is_checkpoint_key(snapshot.key):
            # Cleared first: a create whose answer is lost may have made an instance a destroy must find.
            self._sandboxes.snapshotted(sandbox_id, False)
            try:
                sandbox = self._snapshots.restore(sandbox_id, kind, snapshot.key, allow)
            except Exception as e:  # SnapshotNotFound when it is gone (collected, deleted)
                raise restore_error(snapshot.key, f"resuming {sandbox_id}", e) from e
            log.info("e2b: E2B sandbox %s of %s made from %s", sandbox.sandbox_id, sandbox_id, snapshot.key)
            return sandbox.sandbox_id
        # Checked before connecting: connecting resumes a paused sandbox, another stack's included.
        self._sandboxes.check_owned(snapshot.key, sandbox_id)
        sandbox = self._sandboxes.connect(snapshot.key, f"resume {sandbox_id}")
        self._sandboxes.remember(sandbox, kind)
        if allow is not None:
            # E2B's connect takes no network, and a paused sandbox comes back with the network it was
            # paused with: a list set while it was suspended goes on first, before its model token and
            # before the resume is recorded (its paused processes run for that one round trip).
            self.set_egress(sandbox_id, sandbox.sandbox_id, kind, allow)
        # A new token: the one from before the suspend was revoked and stays so.
        self._gateway.keep(sandbox.sandbox_id, self._gateway.issue(sandbox_id))
        log.info("e2b: resumed E2B sandbox %s of %s", sandbox.sandbox_id, sandbox_id)
        return sandbox.sandbox_id

    def usage(self, sandbox_id: str, ref: str) -> Usage | None:
        """The run's model calls through the gateway (when it is on). CPU, memory and bytes are None: the
        SDK's metrics are CPU percentages and memory sampled every few seconds (a sum or a peak from them
        would be an estimate), and only model calls pass the gateway, the rest of the traffic E2B's own
        network (docs/operations.md)."""
        counts = self._gateway.run_usage(sandbox_id)
        if counts is None:
            return None
        return Usage(
            model_requests=counts["requests"],
            model_input_tokens=counts["input_tokens"],
            model_output_tokens=counts["output_tokens"],
            model_statuses=counts["status"],
        )

    def image_version(self, kind: str) -> str | None:
        """The kind's template (``name:tag``): a pooled sandbox made from another is stale."""
        return self._settings.templates.get(kind)

    def check_egress(self, allow: Sequence[str]) -> tuple[str, ...]:
        return check_allow(allow)  # the rules the Docker proxy keeps, so a list means the same on both

    def check_credentials(self, kind: str, allow: Sequence[str] | None, host: str) -> str:
        raise Unsupported(
            "e2b",
            "credentials at the egress point",
            "E2B sandboxes leave through E2B's own egress; use the Docker provider, or the gateway's git "
            "grants for git hosts",
        )

    def set_credentials(self, sandbox_id: str, host: str, headers: Mapping[str, str]) -> None:
        self.check_credentials("", None, host)

    def _egress_hosts(self, kind: str | None, allow: Sequence[str] | None) -> list[str]:
        hosts = list(self._settings.egress_allow.get(kind or "", ()) if allow is None else allow)
        gateway = urlsplit(self._settings.gateway_url).hostname if self._settings.gateway_url else None
        if gateway and gateway not in hosts:
            hosts.append(gateway)  # the model's way out stays open, as Docker's gateway is not the proxy's
        return hosts

    def set_egress(self, sandbox_id: str, ref: str, kind: str, allow: Sequence[str] | None) -> None:
        hosts = self._egress_hosts(kind, allow)
        self._sandboxes.check_owned(ref, sandbox_id)
        # The update replaces the whole egress configuration (what is omitted is cleared), so it is the
        # create's network again with another allow-list.
        try:
            self._sandboxes.retrying(
                f"update the network of {ref}",
                lambda: self._sandboxes.sdk.update_network(
                    ref, {"allow_out": hosts, "deny_out": [ALL_TRAFFIC]}
                ),
                (SandboxNotFoundException,),
            )
        except SandboxNotFoundException as e:
            self._sandboxes.lost(ref)
            raise ProviderLost(f"E2B sandbox {ref} of {sandbox_id} is gone; its network cannot change") from e
        log.info("e2b: egress of E2B sandbox %s of %s set to %d hosts", ref, sandbox_id, len(hosts))

    def destroy(self, sandbox_id: str, ref: str | None) -> None:
        self._gateway.revoke(sandbox_id, ref)
        if ref is not None:
            if self._sandboxes.check_owned(ref, sandbox_id) is None:
                return  # gone already
            refs = [ref]
        elif self._sandboxes.only_snapshotted(sandbox_id):
            refs = []  # killed at its suspend to a snapshot here: nothing of it runs (no listing needed)
        elif (known := self._sandboxes.known_ref(sandbox_id)) is not None:
            # A suspended record holds no ref, but we made or saw its sandbox: that one is the sandbox's
            # (a create of ours makes at most one per id), so no listing is needed to find it.
            refs = [known]
        else:
            refs = [info.sandbox_id for info in self._sandboxes.find(sandbox_id)]  # the listing is ours only
        for each in refs:
            self._kill(each, sandbox_id)

    def copy_snapshot(self, snapshot: SnapshotInfo, key: str) -> SnapshotInfo:
        if not self.capabilities.checkpoints or not is_checkpoint_key(snapshot.key):
            raise Unsupported(
                self.name,
                "copying a snapshot (fork)",
                "a paused E2B sandbox is its only copy (E2B_CHECKPOINTS)",
            )
        return self._snapshots.copy(snapshot.key, key)

    def delete_snapshot(self, snapshot: SnapshotInfo) -> None:
        if is_checkpoint_key(snapshot.key):
            self._snapshots.delete(snapshot.key)
            return
        # The key is a sandbox id that a resume brings back to life under the same id, so killing it is
        # only deleting a snapshot while it is paused; a running one is a live workspace, left alone.
        if self._sandboxes.was_killed(snapshot.key):
            return  # destroyed with its sandbox (the service deletes a suspended one's snapshot after)
        info = self._sandboxes.owned_info(snapshot.key, None)
        if info is None:
            return
        if info.state != SandboxState.PAUSED:
            log.warning(
                "e2b: not deleting snapshot %s: the sandbox is %s again", snapshot.key, info.state.value
            )
            return
        self._kill(snapshot.key, info.metadata.get(META_ID, "?"))

    def snapshot_ok(self, snapshot: SnapshotInfo) -> bool:
        if is_checkpoint_key(snapshot.key):
            return self._snapshots.exists(snapshot.key)
        if self._sandboxes.was_killed(snapshot.key):
            return False
        info = self._sandboxes.info(snapshot.key)
        # Another deployment's paused sandbox is not a snapshot of ours (as a Docker archive under another
        # deployment's prefix is invisible to us).
        return (
            info is not None
            and info.state == SandboxState.PAUSED
            and self._sandboxes.foreign(info, None) is None
        )

    # --- inside a running sandbox: exec, files and processes are forwarded (providers/delegating.py) ------

    def url(self, ref: str, port: int) -> str:
        return self._processes.url(ref, port)

    def preview(self, ref: str, port: int) -> Preview:
        return self._processes.preview(ref, port)

    def model_activity(self, ref: str) -> datetime | None:
        """When the gateway last relayed a model call of the sandbox behind ``ref`` (None: never, or no
        gateway). For the provider's ``last_activity``: a model call is the sandbox's activity."""
        return self._gateway.model_activity(ref)

    # --- what E2B holds (for the reconciler) ---------------------------------------------------------------

    def instance(self, sandbox_id: str) -> ProviderInstance | None:
        found = [self._instance(info) for info in self._sandboxes.find(sandbox_id)]
        # Should there ever be two (a create raced), the running one is the one in use.
        found.sort(key=lambda i: i.status != "running")
        return found[0] if found else None

    def list_instances(self) -> list[ProviderInstance]:
        return [self._instance(info) for info in self._sandboxes.listing({})]

    def list_snapshots(self) -> list[tuple[str, SnapshotInfo]]:
        paused = [
            (info.metadata.get(META_ID, ""), SnapshotInfo(key=info.sandbox_id, sha256=None, bytes=None))
            for info in self._sandboxes.listing({}, [SandboxState.PAUSED])
        ]
        # Named snapshots are listed only with checkpoints on: one more call per reconcile otherwise.
        return paused + (self._snapshots.listing() if self.capabilities.checkpoints else [])

    # --- internals ------------------------------------------------------------------------------------------

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
            self._gateway.revoke(sandbox_id, ref)
        self._sandboxes.forget(ref)
        killed = self._sandboxes.retrying(f"kill {ref}", lambda: self._sandboxes.sdk.kill(ref))
        self._sandboxes.lost(ref)  # killed now or gone before: either way E2B no longer has it
        log.info("e2b: %s E2B sandbox %s of %s", "killed" if killed else "already gone:", ref, sandbox_id)
