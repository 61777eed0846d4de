"""A Docker sandbox's suspend: its workspace archived with every process of the container frozen.

Docker's archive endpoint tars a live filesystem. A file that shrinks while the tar is written (a process
truncating a log, a build rewriting its output) leaves the stream shorter than its header says, and the
archive is refused as malformed; a process churning files could make every suspend of its sandbox fail,
and so its sandbox impossible to evict or to time out. A suspend stops the sandbox's processes anyway
(the container is removed once the snapshot is stored; the running ones are recorded as stopped), so
they are frozen first (``docker pause``, the cgroup freezer): the archive then reads a filesystem nobody
writes. If anything fails before the container is released, the processes are thawed and the sandbox
is exactly as it was (idle, the container and its workspace kept, nothing stored under the key that is
not a whole, verified snapshot).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from sandbox_lifecycle.adapters.providers.docker.containers import Containers
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost
from sandbox_lifecycle.core.ports import SnapshotInfo, WorkspaceSpec

if TYPE_CHECKING:
    from sandbox_lifecycle.adapters.snapshots.pieces import PieceStore

log = logging.getLogger("sandbox_lifecycle")


@contextmanager
def frozen(containers: Containers, ref: str, action: str) -> Iterator[None]:
    """Every process of container ``ref`` frozen while the block runs; thawed again if it raises (on
    success the block has removed the container, so there is nothing to thaw).

    A container already paused (a suspend that died mid-way) is taken as it is. An engine that cannot
    pause it (a runtime without the freezer) is logged and the archive runs unfrozen, as before: a
    suspend that may fail is better than none.
    """
    api = containers.client.api
    with containers.errors(action, ref):
        paused = bool(api.inspect_container(ref)["State"].get("Paused"))
    if not paused:
        try:
            with containers.errors(f"freeze the processes of container {ref[:12]}", ref):
                api.pause(ref)
        except ProviderLost:
            raise
        except ProviderError as exc:
            log.warning("archiving container %s unfrozen: %s", ref[:12], exc)
    try:
        yield
    except BaseException:
        try:
            with containers.errors(f"thaw the processes of container {ref[:12]}", ref):
                if api.inspect_container(ref)["State"].get("Paused"):
                    api.unpause(ref)
        except ProviderError as exc:
            log.warning("could not thaw container %s after a failed suspend: %s", ref[:12], exc)
        raise


def store_snapshot(
    containers: Containers,
    pieces: PieceStore,
    sandbox_id: str,
    ref: str,
    workspace: WorkspaceSpec,
    key: str,
    *,
    base_key: str | None,
    grace_s: float,
) -> SnapshotInfo:
    """Store ``workspace`` of container ``ref`` as a checkpoint of pieces under ``key`` (only the pieces
    its base manifest, ``base_key``, does not name are uploaded), verified after storing.

    A stream that ends early or is malformed, a suspend past half the grace, a manifest that does not
    verify: each fails before or instead of the manifest, and the caller keeps the container.
    """
    # why: checkpoint (zstandard, tarfile) costs every exec's start ~18 ms (measured); only suspends use it
    from sandbox_lifecycle.adapters.snapshots.checkpoint import write_checkpoint

    action = f"snapshot sandbox {sandbox_id}"
    with containers.errors(action, ref):
        chunks, _ = containers.client.api.get_archive(ref, workspace.root)
    with containers.errors(action, ref):
        written = write_checkpoint(chunks, workspace, pieces, key, base_key=base_key, grace_s=grace_s)
    return replace(written.info, workspace_bytes=written.workspace_bytes, bytes_new=written.bytes_new)
