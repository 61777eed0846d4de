"""The E2B sandboxes of one deployment as the E2B provider and its helpers (exec, files, processes, the
model gateway) reach them: the SDK client, which refs are ours, and each running one's SDK handle.

Round trips: every call is one to E2B's cloud, so a call an operation does not need is not made.
Ownership is checked from what we already know of a ref (we made it, or a listing or lookup showed its
metadata: metadata never changes and E2B never reuses an id), a ref's SDK handle is kept from create to
kill (pause and resume included), and a ref we killed is known to be gone. Only a ref this process has
not seen costs a lookup first (``GET /sandboxes/{id}``), which is what refuses another deployment's
sandbox.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from e2b import (
    E2B,
    Sandbox,
    SandboxInfo,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

from sandbox_lifecycle.adapters.providers.e2b.retry import retrying
from sandbox_lifecycle.adapters.providers.e2b.settings import E2BSettings
from sandbox_lifecycle.core.errors import ForeignSandbox, ProviderError, ProviderLost
from sandbox_lifecycle.core.kinds import KINDS

T = TypeVar("T")

# Metadata keys on every sandbox we create; `managed` lets one list call find all of ours.
META_ID = "sandbox_lifecycle_id"
META_KIND = "kind"
META_MANAGED = "managed"
META_DEPLOYMENT = "deployment"
# Bounds every paged listing: 1000 pages of 100 is far beyond any real fleet.
MAX_LIST_PAGES = 1000
# Bounds each per-ref memory (verified owners, killed refs, unsure creates); the oldest entry goes first,
# and forgetting one only costs a lookup the next time that ref is used.
MAX_REMEMBERED = 10_000


@dataclass
class Handle:
    sandbox: Sandbox
    kind: str | None
    extended_at: float
    # Paused by us: the handle is kept for the resume (which connects it again), but envd will not answer.
    paused: bool = False

    @property
    def workdir(self) -> str | None:
        """The kind's working directory (None for a sandbox of a kind this version does not know)."""
        return KINDS[self.kind].workdir if self.kind in KINDS else None


@dataclass(frozen=True)
class Owner:
    """Whose an E2B sandbox is, once verified: ours (this deployment's), of this sandbox id and kind."""

    sandbox_id: str
    kind: str | None


def remember_bounded(memory: dict[str, T], key: str, value: T) -> None:
    """Insert as the newest entry, dropping the oldest beyond MAX_REMEMBERED (caller holds the lock)."""
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > MAX_REMEMBERED:
        del memory[next(iter(memory))]


class E2BSandboxes:
    """What this process knows of the deployment's E2B sandboxes, and the SDK calls that learn it."""

    def __init__(self, settings: E2BSettings, deployment: str) -> None:
        self.settings = settings
        self.deployment = deployment
        # Bound client: settings win over E2B_* variables of the process, and retries=0 leaves ours the
        # only retry policy (see retry.py).
        self.sdk = E2B(
            api_key=settings.api_key,
            api_url=settings.api_url,
            sandbox_url=settings.sandbox_url,
            domain=settings.domain,
            request_timeout=settings.request_timeout,
            retries=0,
        ).Sandbox
        self._handles: dict[str, Handle] = {}
        # Refs whose ownership is verified (see check_owned); refs we killed; sandbox ids whose create
        # failed without saying whether E2B made the sandbox. All under lock, all bounded.
        self._owners: dict[str, Owner] = {}
        self._killed: dict[str, None] = {}
        self._unsure: dict[str, None] = {}
        # Sandbox ids whose instance we killed at a suspend to a snapshot (checkpoints): until a resume
        # makes another, nothing of theirs runs, so a destroy needs no listing to find one.
        self._snapshotted: dict[str, None] = {}
        self.lock = threading.Lock()

    def retrying(self, what: str, call: Callable[[], T], passthrough: tuple[type[Exception], ...] = ()) -> T:
        """``call`` under the one retry policy (retry.py), with this deployment's settings."""
        return retrying(self.settings, what, call, passthrough)

    # --- what E2B holds -------------------------------------------------------------------------------------

    def listing(
        self, metadata: dict[str, str], states: list[SandboxState] | None = None
    ) -> list[SandboxInfo]:
        """Our sandboxes (managed, of this deployment) that also carry ``metadata``, in ``states``."""
        ours = {META_MANAGED: "1", META_DEPLOYMENT: self.deployment, **metadata}
        query = SandboxQuery(metadata=ours, state=states or [SandboxState.RUNNING, SandboxState.PAUSED])
        paginator = self.sdk.list(query=query, limit=self.settings.list_page_size)
        found: list[SandboxInfo] = []
        for _ in range(MAX_LIST_PAGES):
            if not paginator.has_next:
                return found
            found.extend(self.retrying("list sandboxes", paginator.next_items))
        raise ProviderError(f"listing E2B sandboxes did not end within {MAX_LIST_PAGES} pages")

    def find(self, sandbox_id: str) -> list[SandboxInfo]:
        found = self.listing({META_ID: sandbox_id})
        for info in found:
            self.record_owner(info)
        return found

    def info(self, ref: str) -> SandboxInfo | None:
        try:
            return self.retrying(f"get {ref}", lambda: self.sdk.get_info(ref), (SandboxNotFoundException,))
        except SandboxNotFoundException:
            return None

    # --- whose a sandbox is ---------------------------------------------------------------------------------

    def foreign(self, info: SandboxInfo, sandbox_id: str | None) -> str | None:
        """Why the E2B sandbox is not ours (this deployment's, and ``sandbox_id``'s when given), or None."""
        meta = info.metadata or {}
        owner = meta.get(META_DEPLOYMENT)
        if meta.get(META_MANAGED) != "1" or not meta.get(META_ID):
            return "it is not a sandbox-lifecycle sandbox"
        if owner != self.deployment:
            return f"deployment {owner!r}, not {self.deployment!r}"
        if sandbox_id is not None and meta.get(META_ID) != sandbox_id:
            return f"it is sandbox {meta.get(META_ID)}'s"
        return None

    def owned_info(self, ref: str, sandbox_id: str | None) -> SandboxInfo | None:
        """The E2B sandbox's info after checking its metadata is ours; None when E2B no longer has it.

        Every call that acts on an E2B sandbox by its id checks first: stacks sharing one E2B team see
        each other's sandboxes by id, and a copied database holds the original's ids."""
        info = self.info(ref)
        if info is not None and (why := self.foreign(info, sandbox_id)) is not None:
            raise ForeignSandbox(sandbox_id or info.metadata.get(META_ID, "?"), f"E2B sandbox {ref}", why)
        if info is not None:
            self.record_owner(info)
        return info

    def check_owned(self, ref: str, sandbox_id: str | None) -> Owner | None:
        """Whose the E2B sandbox is, after checking it is ours (and ``sandbox_id``'s when given); None when
        it is gone. The same check as :meth:`owned_info`, without its lookup when the ref is known.

        Known means verified before: the answer to our own create, or metadata a lookup or listing
        showed. That stays true for the ref's life, since E2B metadata is fixed at create and an id is
        never reused; so another deployment's ref, which we never made and whose metadata never passed,
        always costs the lookup that refuses it."""
        with self.lock:
            owner = self._owners.get(ref)
            killed = ref in self._killed
        if killed:
            return None
        if owner is None:
            info = self.owned_info(ref, sandbox_id)
            return None if info is None else Owner(info.metadata[META_ID], info.metadata.get(META_KIND))
        if sandbox_id is not None and owner.sandbox_id != sandbox_id:
            raise ForeignSandbox(sandbox_id, f"E2B sandbox {ref}", f"it is sandbox {owner.sandbox_id}'s")
        return owner

    def record_owner(self, info: SandboxInfo) -> None:
        """Remember a listed or looked-up sandbox's owner, if it is ours."""
        if self.foreign(info, None) is None:
            self.verified(info.sandbox_id, Owner(info.metadata[META_ID], info.metadata.get(META_KIND)))

    def verified(self, ref: str, owner: Owner) -> None:
        with self.lock:
            remember_bounded(self._owners, ref, owner)

    def known_ref(self, sandbox_id: str) -> str | None:
        """The E2B sandbox we know to be ``sandbox_id``'s, newest first, if any."""
        with self.lock:
            for ref in reversed(self._owners):  # bounded by MAX_REMEMBERED
                if self._owners[ref].sandbox_id == sandbox_id:
                    return ref
        return None

    # --- creates whose outcome is unknown -------------------------------------------------------------------

    def is_unsure(self, sandbox_id: str) -> bool:
        with self.lock:
            return sandbox_id in self._unsure

    def unsure(self, sandbox_id: str) -> None:
        """A create of ``sandbox_id`` failed without saying whether E2B made the sandbox."""
        with self.lock:
            remember_bounded(self._unsure, sandbox_id, None)

    def settled(self, sandbox_id: str) -> None:
        with self.lock:
            self._unsure.pop(sandbox_id, None)

    # --- sandboxes held in snapshots only (checkpoints) -----------------------------------------------------

    def snapshotted(self, sandbox_id: str, held: bool) -> None:
        """``sandbox_id`` is now held in a snapshot only (``held``), or runs again (not ``held``)."""
        with self.lock:
            if held:
                remember_bounded(self._snapshotted, sandbox_id, None)
            else:
                self._snapshotted.pop(sandbox_id, None)

    def only_snapshotted(self, sandbox_id: str) -> bool:
        with self.lock:
            return sandbox_id in self._snapshotted

    # --- refs gone ------------------------------------------------------------------------------------------

    def was_killed(self, ref: str) -> bool:
        with self.lock:
            return ref in self._killed

    def lost(self, ref: str) -> None:
        """E2B no longer has the ref: nothing of it is worth keeping (the id will never come back)."""
        with self.lock:
            self._handles.pop(ref, None)
            self._owners.pop(ref, None)
            remember_bounded(self._killed, ref, None)

    # --- SDK handles of running sandboxes -------------------------------------------------------------------

    def connect(self, ref: str, what: str) -> Sandbox:
        """Attach to the sandbox, resuming it if paused, with our timeout (E2B would otherwise set 5 min).

        A handle we kept over our own pause is connected again in place, as the SDK does after its own
        pause: the same one call, and the handle (its envd clients on the SDK's shared connection pool)
        stays the one handle of the ref."""
        timeout = self.settings.sandbox_timeout
        with self.lock:
            handle = self._handles.get(ref)
        connect: Callable[[], Sandbox] = (
            (lambda: self.sdk.connect(ref, timeout=timeout))
            if handle is None
            else (lambda: handle.sandbox.connect(timeout=timeout))
        )
        try:
            return self.retrying(what, connect, (SandboxNotFoundException,))
        except SandboxNotFoundException as e:
            self.lost(ref)
            raise ProviderLost(f"E2B no longer has sandbox {ref}; its workspace cannot come back") from e

    def remember(self, sandbox: Sandbox, kind: str | None) -> None:
        with self.lock:
            self._handles[sandbox.sandbox_id] = Handle(sandbox, kind, time.monotonic())

    def forget(self, ref: str) -> None:
        with self.lock:
            self._handles.pop(ref, None)

    def pausing(self, ref: str) -> None:
        """We are pausing the ref: its handle is kept for the resume; until then envd calls reconnect."""
        with self.lock:
            handle = self._handles.get(ref)
            if handle is not None:
                handle.paused = True

    def handle(self, ref: str) -> Handle:
        """The SDK object for a running sandbox, attaching once per process, and keeping E2B's timer ahead.

        Using a sandbox does not extend its E2B timeout, so a sandbox in steady use is extended once a
        third of the timeout has passed: one small call per ten minutes or so, not one per exec.
        """
        with self.lock:
            handle = self._handles.get(ref)
        if handle is None or handle.paused:
            # Checked before connecting, which would resume another stack's paused sandbox.
            owner = self.check_owned(ref, None)
            sandbox = self.connect(ref, f"connect {ref}")
            self.remember(sandbox, owner.kind if owner else None)
            with self.lock:
                return self._handles[ref]
        if time.monotonic() - handle.extended_at > self.settings.sandbox_timeout / 3:
            try:
                self.retrying(
                    f"extend {ref}",
                    lambda: self.sdk.set_timeout(ref, self.settings.sandbox_timeout),
                    (SandboxNotFoundException,),
                )
            except SandboxNotFoundException as e:
                self.forget(ref)
                raise ProviderLost(f"E2B no longer has sandbox {ref}") from e
            handle.extended_at = time.monotonic()
        return handle
