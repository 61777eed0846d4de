"""A checkpoint as the log records it: a stored snapshot a resume can restore (``Sandbox.checkpoints``)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class Checkpoint(NamedTuple):
    """A stored snapshot a resume can restore: the one a suspend took at ``version`` of the stream (a
    fork's first one is its version 1). ``kept``: retained after a resume until retention collects it;
    one that is not (an earlier release's, or E2B's paused instance) lives only while it is current."""

    version: int
    at: datetime
    reason: str
    snapshot_key: str
    sha256: str | None
    bytes: int | None
    kept: bool
    # The workspace's size, and the bytes this checkpoint added to the store (pieces it uploaded); None
    # when the provider did not say (whole archives, E2B, events of earlier releases).
    workspace_bytes: int | None = None
    bytes_new: int | None = None
