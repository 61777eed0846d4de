"""sandbox-lifecycle: disposable, isolated sandboxes for AI coding agents, on an event-sourced lifecycle.

This module is the public API. A backend imports from here only::

    import sandbox_lifecycle

    service = sandbox_lifecycle.connect()          # everything from the environment, validated up front
    with service.turn("conversation-42", "ai-writeback") as sbx:
        sbx.exec("dbt compile")

    service = sandbox_lifecycle.connect_async()    # asyncio: the same verbs, awaitable
    async with service.turn("conversation-42", "ai-writeback") as sbx:
        await sbx.exec("dbt compile")

    with sandbox_lifecycle.run_scheduler(service):  # the timer ticker, for as long as the app runs
        ...

    with service.turn("conversation-42", "data-app") as sbx:   # the agent CLI's turn in the sandbox
        result = sandbox_lifecycle.run_agent(sbx, "build the app", on_event=print)

    sandbox_lifecycle.print_history(service.history(sbx.id))   # the timeline `sandboxctl history` prints

Without a model key the agent can talk to the bundled scripted model: ``sandbox_lifecycle.scripted_model``.

The implementation lives in ``sandbox_lifecycle.core`` (the domain), ``sandbox_lifecycle.events`` (the log)
and ``sandbox_lifecycle.adapters`` (providers, snapshot stores, the CLI); their module layout may change
between releases, the names exported here do not.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# pyproject.toml maps core/, events/ and adapters/ under this name (package-dir): a wheel holds them in
# this folder, an editable install's import hook finds them at the root. A checkout used without an
# install (PYTHONPATH, or a venv that installed another clone) finds them here, in the same real folders
# of this clone, so that no module is ever loaded from two places.
_CHECKOUT = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "core").is_dir() and (_CHECKOUT / "core" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))

# After the lines above, which they need in a checkout.
from sandbox_lifecycle.core.errors import (  # noqa: E402
    CapacityExceeded,
    CheckpointNotFound,
    CommandFailed,
    ConcurrencyError,
    ConfigError,
    ExecTimeout,
    ForeignSandbox,
    InvalidTransition,
    ProcessNotFound,
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
    Unsupported,
)
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME, KINDS  # noqa: E402

if TYPE_CHECKING:
    from sandbox_lifecycle import scripted_model
    from sandbox_lifecycle.adapters.agent import events as agent_events
    from sandbox_lifecycle.adapters.agent.claude_code import (
        AgentError,
        AgentResult,
        AgentTimeout,
        ModelUnreachable,
        run_agent,
        run_agent_async,
    )
    from sandbox_lifecycle.adapters.agent.claude_code import describe as describe_agent_event
    from sandbox_lifecycle.adapters.agent.events import AgentEvent
    from sandbox_lifecycle.adapters.entrypoints.cli.render import print_history
    from sandbox_lifecycle.adapters.entrypoints.scheduler import Scheduler
    from sandbox_lifecycle.adapters.providers.docker.bridge import docker_host_address
    from sandbox_lifecycle.core.async_service import (
        AsyncProcess,
        AsyncSandboxService,
        AsyncTurn,
        AsyncTurnHandle,
    )
    from sandbox_lifecycle.core.checkpoints import Checkpoint
    from sandbox_lifecycle.core.git import Author
    from sandbox_lifecycle.core.ports import (
        ExecResult,
        FileEntry,
        ProcessInfo,
        ProviderCapabilities,
        TransferReport,
    )
    from sandbox_lifecycle.core.processes import Process, ProcessLogs
    from sandbox_lifecycle.core.rescue import Recovery
    from sandbox_lifecycle.core.service import SandboxService, SweepReport, TurnHandle
    from sandbox_lifecycle.events.records import SandboxRow

# Loaded on first use (PEP 562): every `sandboxctl` command imports this package first, and the service
# with its asyncio face and importlib.metadata cost more than a short command's own work. A value is the
# defining module, or "module:name" where the public name differs from the module's own.
_LAZY = {
    "AgentEvent": "sandbox_lifecycle.adapters.agent.events",
    "describe_agent_event": "sandbox_lifecycle.adapters.agent.claude_code:describe",
    "print_history": "sandbox_lifecycle.adapters.entrypoints.cli.render",
    "Author": "sandbox_lifecycle.core.git",
    "AgentError": "sandbox_lifecycle.adapters.agent.claude_code",
    "AgentResult": "sandbox_lifecycle.adapters.agent.claude_code",
    "AgentTimeout": "sandbox_lifecycle.adapters.agent.claude_code",
    "ModelUnreachable": "sandbox_lifecycle.adapters.agent.claude_code",
    "run_agent": "sandbox_lifecycle.adapters.agent.claude_code",
    "docker_host_address": "sandbox_lifecycle.adapters.providers.docker.bridge",
    "run_agent_async": "sandbox_lifecycle.adapters.agent.claude_code",
    "AsyncProcess": "sandbox_lifecycle.core.async_service",
    "ProcessInfo": "sandbox_lifecycle.core.ports",
    "ProviderCapabilities": "sandbox_lifecycle.core.ports",
    "Checkpoint": "sandbox_lifecycle.core.checkpoints",
    "Process": "sandbox_lifecycle.core.processes",
    "ProcessLogs": "sandbox_lifecycle.core.processes",
    "AsyncSandboxService": "sandbox_lifecycle.core.async_service",
    "AsyncTurn": "sandbox_lifecycle.core.async_service",
    "AsyncTurnHandle": "sandbox_lifecycle.core.async_service",
    "ExecResult": "sandbox_lifecycle.core.ports",
    "FileEntry": "sandbox_lifecycle.core.ports",
    "TransferReport": "sandbox_lifecycle.core.ports",
    "SandboxService": "sandbox_lifecycle.core.service",
    "SweepReport": "sandbox_lifecycle.core.service",
    "Recovery": "sandbox_lifecycle.core.rescue",
    "TurnHandle": "sandbox_lifecycle.core.service",
    "SandboxRow": "sandbox_lifecycle.events.records",
}
# Public modules, also loaded on first use: `sandbox_lifecycle.agent_events.Result`,
# `sandbox_lifecycle.scripted_model.ScriptedModel` (which `from sandbox_lifecycle.scripted_model import`
# reaches as a submodule too).
_MODULES = {
    "agent_events": "sandbox_lifecycle.adapters.agent.events",
    "scripted_model": "sandbox_lifecycle.scripted_model",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # why here: `import sandbox_lifecycle` stays cheap; __version__ is looked up when read
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("sandbox-lifecycle")
        except PackageNotFoundError:  # run from a source tree that was never installed
            value = "0+unknown"
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
    else:
        raise AttributeError(f"module 'sandbox_lifecycle' has no attribute {name!r}")
    globals()[name] = value
    return value


def connect(environ: Mapping[str, str] | None = None) -> SandboxService:
    """Build the service from the environment (``os.environ`` unless given).

    Every setting, the chosen provider's included, is read and validated here: a missing credential or
    a malformed value raises ``ConfigError`` naming the variable before anything is written to the log.
    """
    # why here: the public API imports no adapter until a service is asked for
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    return build_service(environ)


def connect_async(environ: Mapping[str, str] | None = None, *, max_workers: int = 64) -> AsyncSandboxService:
    """``connect()`` for asyncio: every verb awaitable, run in a pool of ``max_workers`` threads.

    Call it once at start-up, like ``connect()``: it validates settings (and, on SQLite, brings the schema
    up to date) before returning, so it does block briefly; ``await asyncio.to_thread(connect_async)``
    if even that must stay off the loop. ``await service.aclose()`` at shutdown.
    """
    # why here: asyncio loads only for the async face
    from sandbox_lifecycle.core.async_service import AsyncSandboxService

    return AsyncSandboxService(connect(environ), max_workers=max_workers)


def run_scheduler(
    service: SandboxService | AsyncSandboxService,
    *,
    interval: timedelta | None = None,
    stop_timeout: float = 10.0,
) -> Scheduler:
    """The timer ticker in a background thread, for as long as the application runs.

    ``with sandbox_lifecycle.run_scheduler(service): ...`` or, in an asyncio lifespan,
    ``async with sandbox_lifecycle.run_scheduler(service): ...``. The sweep interval defaults to
    ``SANDBOX_SWEEP_INTERVAL_MS``; leaving the block waits at most ``stop_timeout`` s for a sweep in
    flight. Every replica may run one: the log makes each timer transition happen exactly once.
    """
    # why here: APScheduler loads only when a scheduler runs
    from sandbox_lifecycle.adapters.entrypoints.scheduler import run_scheduler as make

    return make(service, interval=interval, stop_timeout=stop_timeout)


def verify_webhook(
    secret: bytes, body: bytes, headers: Mapping[str, str], *, tolerance: float = 300
) -> tuple[str, int]:
    """A webhook receiver's check of a `sandboxctl relay` delivery: the signature header
    (``t=…,v1=…``) must sign the raw body, the event id and position headers, and a timestamp within
    ``tolerance`` seconds of now. Returns (event id, position); raises ValueError otherwise."""
    # why here: a receiver checking a signature needs nothing else of the package
    from sandbox_lifecycle.adapters.entrypoints.relay import verify_delivery

    return verify_delivery(secret, body, headers, tolerance=tolerance)


__all__ = [
    "AI_WRITEBACK",
    "DATA_APP",
    "HOME",
    "KINDS",
    "AgentError",
    "AgentEvent",
    "AgentResult",
    "AgentTimeout",
    "AsyncProcess",
    "AsyncSandboxService",
    "AsyncTurn",
    "AsyncTurnHandle",
    "Author",
    "CapacityExceeded",
    "Checkpoint",
    "CheckpointNotFound",
    "CommandFailed",
    "ConcurrencyError",
    "ConfigError",
    "ExecResult",
    "ExecTimeout",
    "FileEntry",
    "ForeignSandbox",
    "InvalidTransition",
    "ModelUnreachable",
    "Process",
    "ProcessInfo",
    "ProcessLogs",
    "ProcessNotFound",
    "ProviderCapabilities",
    "ProviderError",
    "ProviderLost",
    "ProviderRefused",
    "Recovery",
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
    "TransferReport",
    "TurnHandle",
    "UnsafeArchive",
    "Unsupported",
    "__version__",
    "agent_events",
    "connect",
    "connect_async",
    "describe_agent_event",
    "docker_host_address",
    "print_history",
    "run_agent",
    "run_agent_async",
    "run_scheduler",
    "scripted_model",
    "verify_webhook",
]
