"""E2B checkpoints: each suspend kept as a named E2B snapshot, so rewind and fork work there
(``E2B_CHECKPOINTS=1``; off by default, see docs/checkpoints.md for the cost and why).

How the port maps onto E2B's own snapshots (SDK ``create_snapshot``, create-from-snapshot,
``delete_snapshot``, ``list_snapshots``):

* A checkpoint's key is the core's (``snapshots/<sandbox id>/<version>.tar.zst``); its E2B snapshot is
  named from it (:func:`snapshot_name`), so a key found in the log always names its snapshot, in any
  process, without a lookup or a table of our own.
* Suspend takes the snapshot (a full one: memory and filesystem), then kills the sandbox: a paused
  sandbox would hold the newest state only, and telling from a key whether the paused sandbox still
  holds *that* state would cost a call on every resume. So resume creates a sandbox from the snapshot
  (a new E2B id every resume), which restores the chosen checkpoint whichever it is.
* A fork's copy: E2B has no copy of a snapshot, so a short-lived sandbox is made from the source's
  snapshot, snapshotted under the fork's name, and killed.
* Deleting a checkpoint deletes its snapshot (``DELETE /templates/{name}``; gone already is success).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence

from e2b import NotFoundException, Sandbox, SandboxException, SandboxNotFoundException

from sandbox_lifecycle.adapters.providers.e2b.retry import provider_error
from sandbox_lifecycle.adapters.providers.e2b.sandboxes import MAX_LIST_PAGES, E2BSandboxes
from sandbox_lifecycle.core.errors import ProviderError, SandboxError, SnapshotNotFound
from sandbox_lifecycle.core.ports import SnapshotInfo

log = logging.getLogger(__name__)

# The core's snapshot key (core/sandbox.snapshot_key) for a sandbox id E2B's names can carry as it is.
_CORE_KEY = re.compile(r"snapshots/([a-z0-9]{1,40})/([0-9]{1,12})\.tar\.zst")
# What E2B snapshot names look like here: sl-<deployment digest>-<sandbox id>-<version>.
_NAME = re.compile(r"sl-([0-9a-f]{10})-([a-z0-9]{1,40})-([0-9]{1,12})")


def template_missing(exc: Exception) -> bool:
    """Whether a create failed because E2B lacks its template (a deleted or never taken snapshot): E2B
    answers 404, which the SDK raises as a plain SandboxException carrying the status."""
    return isinstance(exc, NotFoundException) or (
        isinstance(exc, SandboxException) and getattr(exc, "status_code", None) == 404
    )


def restore_error(key: str, what: str, exc: Exception) -> Exception:
    """A failed create from a checkpoint's snapshot as the port says it: SnapshotNotFound when E2B lacks
    the snapshot, our own error as it is, a ProviderError otherwise (a create is not retried here)."""
    if template_missing(exc):
        return SnapshotNotFound(key)
    if isinstance(exc, SandboxError):  # ours already (CapacityExceeded: E2B's 429s outlasted)
        return exc
    return provider_error(f"E2B {what} from snapshot {key} failed", exc)


def is_checkpoint_key(key: str) -> bool:
    """A key the core chose (a checkpoint's), not a paused sandbox's E2B id (E2B without checkpoints,
    and every log written before they were turned on)."""
    return key.startswith("snapshots/")


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def snapshot_name(deployment: str, key: str) -> str:
    """The E2B snapshot name of a checkpoint key: the deployment's digest (so two stacks sharing one E2B
    team never name the same snapshot), then the sandbox id and version where E2B's name rules allow
    them as they are (so the reconciler can tell whose it is), else a digest of the key."""
    match = _CORE_KEY.fullmatch(key)
    tail = f"{match[1]}-{match[2]}" if match else "x" + _digest(key, 32)
    return f"sl-{_digest(deployment, 10)}-{tail}"


def key_of(deployment: str, name: str) -> tuple[str, str] | None:
    """(sandbox id, key) of one of this deployment's snapshot names (bare, namespaced or tagged), or
    None for any other snapshot."""
    match = _NAME.fullmatch(name.rsplit("/", 1)[-1].split(":", 1)[0])
    if match is None or match[1] != _digest(deployment, 10):
        return None
    return match[2], f"snapshots/{match[2]}/{match[3]}.tar.zst"


class E2BCheckpoints:
    """The SDK calls behind E2B checkpoints; ``create`` makes a sandbox of ours from a template or
    snapshot name (the provider's create, with its metadata, network and lifecycle)."""

    def __init__(
        self, sandboxes: E2BSandboxes, create: Callable[[str, str | None, str, Sequence[str] | None], Sandbox]
    ) -> None:
        self._sandboxes = sandboxes
        self._create = create

    def name(self, key: str) -> str:
        return snapshot_name(self._sandboxes.deployment, key)

    def take(self, ref: str, key: str) -> SnapshotInfo:
        """Snapshot the running sandbox under the key's name. Safe to repeat: a name taken gets a new
        build of the same snapshot, so the retry of a call whose answer was lost stores it once."""
        name = self.name(key)
        self._sandboxes.retrying(
            f"snapshot {ref}",
            lambda: self._sandboxes.sdk.create_snapshot(ref, name),
            (SandboxNotFoundException,),
        )
        return SnapshotInfo(key=key, sha256=None, bytes=None)

    def restore(self, sandbox_id: str, kind: str, key: str, allow: Sequence[str] | None = None) -> Sandbox:
        """A new sandbox of ``sandbox_id`` from the checkpoint's snapshot (never retried: see create),
        under the log's allow-list when it has one."""
        return self._create(sandbox_id, kind, self.name(key), allow)

    def copy(self, key: str, to_key: str) -> SnapshotInfo:
        """The snapshot of ``key`` again under ``to_key``'s name, through a sandbox made from it."""
        owner = _CORE_KEY.fullmatch(to_key)
        try:
            helper = self._create(owner[1] if owner else "?", None, self.name(key), None)
        except Exception as e:
            raise restore_error(key, "copying it", e) from e
        try:
            self.take(helper.sandbox_id, to_key)
        finally:
            self._sandboxes.retrying(
                f"kill {helper.sandbox_id}", lambda: self._sandboxes.sdk.kill(helper.sandbox_id)
            )
            self._sandboxes.lost(helper.sandbox_id)
        return SnapshotInfo(key=to_key, sha256=None, bytes=None)

    def delete(self, key: str) -> None:
        name = self.name(key)
        deleted = self._sandboxes.retrying(
            f"delete snapshot {name}", lambda: self._sandboxes.sdk.delete_snapshot(name)
        )
        log.info("e2b: %s snapshot %s (%s)", "deleted" if deleted else "already gone:", name, key)

    def exists(self, key: str) -> bool:
        name = self.name(key)
        paginator = self._sandboxes.sdk.list_snapshots(name=name, limit=1)
        found = self._sandboxes.retrying(f"look up snapshot {name}", paginator.next_items)
        # However E2B spells it back (its id, its full names: namespaced and tagged).
        return any(name in _bare([info.snapshot_id, *info.names]) for info in found)

    def listing(self) -> list[tuple[str, SnapshotInfo]]:
        """(sandbox id, snapshot) of every snapshot of this deployment E2B holds."""
        paginator = self._sandboxes.sdk.list_snapshots(limit=self._sandboxes.settings.list_page_size)
        found: list[tuple[str, SnapshotInfo]] = []
        for _ in range(MAX_LIST_PAGES):
            if not paginator.has_next:
                return found
            for info in self._sandboxes.retrying("list snapshots", paginator.next_items):
                for name in (info.snapshot_id, *info.names):
                    if (ours := key_of(self._sandboxes.deployment, name)) is not None:
                        found.append((ours[0], SnapshotInfo(key=ours[1], sha256=None, bytes=None)))
                        break
        raise ProviderError(f"listing E2B snapshots did not end within {MAX_LIST_PAGES} pages")


def _bare(names: list[str]) -> list[str]:
    return [n.rsplit("/", 1)[-1].split(":", 1)[0] for n in names]
