"""sandbox-lifecycle: disposable, isolated sandboxes for AI coding agents, on an event-sourced lifecycle.

This module is the public API. A backend imports from here only::

    import sandbox_lifecycle

    service = sandbox_lifecycle.connect()          # everything from the environment, validated up front
    with service.turn("conversation-42", "ai-writeback") as sbx:
        sbx.exec("dbt compile")

The implementation lives in ``sandbox_lifecycle.core`` (the domain), ``sandbox_lifecycle.events`` (the log)
and ``sandbox_lifecycle.adapters`` (providers, snapshot stores, the CLI); their module layout may change
between releases, the names exported here do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

from sandbox_lifecycle.core.errors import (
    ConcurrencyError,
    ConfigError,
    ExecTimeout,
    ForeignSandbox,
    InvalidTransition,
    ProviderError,
    ProviderLost,
    ProviderRefused,
    SandboxBusy,
    SandboxError,
    SandboxExpired,
    SandboxNotFound,
    SnapshotCorrupt,
    SnapshotNotFound,
    StoreError,
    UnsafeArchive,
)
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, KINDS
from sandbox_lifecycle.core.ports import ExecResult
from sandbox_lifecycle.core.service import SandboxService, SweepReport, TurnHandle
from sandbox_lifecycle.events.records import SandboxRow

try:
    __version__ = version("sandbox-lifecycle")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


def connect(environ: Mapping[str, str] | None = None) -> SandboxService:
    """Build the service from the environment (``os.environ`` unless given).

    Every setting, the chosen provider's included, is read and validated here: a missing credential or
    a malformed value raises ``ConfigError`` naming the variable before anything is written to the log.
    """
    from sandbox_lifecycle.adapters.bootstrap import build_service

    return build_service(environ)


__all__ = [
    "AI_WRITEBACK",
    "DATA_APP",
    "KINDS",
    "ConcurrencyError",
    "ConfigError",
    "ExecResult",
    "ExecTimeout",
    "ForeignSandbox",
    "InvalidTransition",
    "ProviderError",
    "ProviderLost",
    "ProviderRefused",
    "SandboxBusy",
    "SandboxError",
    "SandboxExpired",
    "SandboxNotFound",
    "SandboxRow",
    "SandboxService",
    "SnapshotCorrupt",
    "SnapshotNotFound",
    "StoreError",
    "SweepReport",
    "TurnHandle",
    "UnsafeArchive",
    "__version__",
    "connect",
]
