"""Typed errors of the domain and of the ports. Every message names what a person can act on."""

from __future__ import annotations

from datetime import datetime

from sandbox_lifecycle.events.records import ConcurrencyError, DatabaseLocked, StoreError

__all__ = [
    "CapacityExceeded",
    "CheckpointNotFound",
    "CommandFailed",
    "ConcurrencyError",
    "ConfigError",
    "DatabaseLocked",
    "ExecTimeout",
    "ForeignSandbox",
    "InvalidTransition",
    "ProcessNotFound",
    "ProviderError",
    "ProviderLost",
    "ProviderRefused",
    "SandboxBusy",
    "SandboxError",
    "SandboxExpired",
    "SandboxNotFound",
    "SideEffectFailed",
    "SnapshotCorrupt",
    "SnapshotNotFound",
    "StoreError",
    "UnsafeArchive",
    "Unsupported",
]


class SandboxError(Exception):
    """Base class of the domain's errors."""


class InvalidTransition(SandboxError):
    def __init__(self, sandbox_id: str, state: str, trigger: str, allowed: tuple[str, ...] = ()) -> None:
        self.sandbox_id = sandbox_id
        self.state = state
        self.trigger = trigger
        hint = f" (allowed from {state}: {', '.join(allowed)})" if allowed else ""
        super().__init__(f"sandbox {sandbox_id}: cannot {trigger} while {state}{hint}")


class SandboxBusy(SandboxError):
    def __init__(self, sandbox_id: str, state: str, detail: str = "") -> None:
        self.sandbox_id = sandbox_id
        self.state = state
        super().__init__(
            f"sandbox {sandbox_id} is busy ({state}){': ' + detail if detail else ''}; "
            "wait for the open turn or in-flight operation to finish"
        )


class SandboxNotFound(SandboxError):
    def __init__(self, sandbox_id: str) -> None:
        self.sandbox_id = sandbox_id
        super().__init__(f"no sandbox with id {sandbox_id!r}")


class CheckpointNotFound(SandboxError):
    """No checkpoint of the sandbox at that version: never taken, or collected by retention."""

    def __init__(self, sandbox_id: str, version: int, known: tuple[int, ...] = ()) -> None:
        self.sandbox_id = sandbox_id
        self.version = version
        have = ", ".join(map(str, known)) or "none"
        super().__init__(
            f"sandbox {sandbox_id} has no checkpoint at version {version} (never taken, or collected by "
            f"retention); its checkpoints: {have} (sandboxctl checkpoints {sandbox_id})"
        )


class SandboxExpired(SandboxError):
    def __init__(self, sandbox_id: str, expired_at: datetime | None, reason: str | None) -> None:
        self.sandbox_id = sandbox_id
        self.expired_at = expired_at
        self.reason = reason
        when = expired_at.isoformat() if expired_at else "an unknown time"
        super().__init__(
            f"sandbox {sandbox_id} expired at {when} (reason: {reason or 'unknown'}); "
            "its workspace is gone, start a new sandbox"
        )


class ConfigError(SandboxError):
    """A setting is missing or malformed; the message names the variable."""


class ProviderError(SandboxError):
    """A provider (Docker, E2B) or snapshot store failed. ``retryable`` says whether a retry may help."""

    retryable = True


class ProviderRefused(ProviderError):
    """The provider refuses to run in this environment (e.g. Docker with NODE_ENV=production)."""

    retryable = False


class ProviderLost(ProviderError):
    """The provider no longer has the sandbox (or its snapshot): the workspace cannot come back."""

    retryable = False


class ForeignSandbox(ProviderError):
    """The provider instance or snapshot under our name is not this deployment's (or not this sandbox's).

    Raised before acting on it: another stack sharing the Docker engine or E2B team owns it (a copied
    database, a staging stack). Nothing was done to it, and a retry will not change that.
    """

    retryable = False

    def __init__(self, sandbox_id: str, what: str, detail: str) -> None:
        self.sandbox_id = sandbox_id
        self.what = what
        super().__init__(
            f"{what} of sandbox {sandbox_id} belongs to another deployment ({detail}); nothing was done to "
            "it. If this database was copied or restored, give the copy its own SANDBOX_DEPLOYMENT"
        )


class SideEffectFailed(ProviderError):
    """A side effect failed with an error that is not the provider's own (an OSError from an unusable
    snapshot directory, a bug): one line saying what failed and where the sandbox was left."""

    def __init__(self, sandbox_id: str, action: str, error: BaseException, left: str) -> None:
        self.sandbox_id = sandbox_id
        self.action = action
        self.error = error
        lines = str(error).strip().splitlines()
        what = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        super().__init__(f"sandbox {sandbox_id}: {action} failed ({what}); {left}")


class ExecTimeout(ProviderError):
    """The command outlived its timeout and was killed. What it printed until then is kept (bounded like
    an ExecResult's output: ``truncated`` says the bound cut it); streaming callbacks got all of it."""

    def __init__(
        self,
        command: str,
        timeout: float,
        stdout_bytes: bytes = b"",
        stderr_bytes: bytes = b"",
        truncated: bool = False,
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.stdout_bytes = stdout_bytes
        self.stderr_bytes = stderr_bytes
        self.truncated = truncated
        super().__init__(f"command {command!r} timed out after {timeout:g}s and was killed")

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")


class CommandFailed(SandboxError):
    """``exec(..., check=True)`` of a command that exited non-zero. Not a ProviderError: the sandbox and
    the provider worked, the command failed; its output is attached (bounded like the ExecResult's)."""

    def __init__(
        self, exit_code: int, stderr: bytes | str, *, command: str = "", stdout: bytes = b""
    ) -> None:
        self.exit_code = exit_code
        self.stderr_bytes = stderr.encode() if isinstance(stderr, str) else stderr
        self.stdout_bytes = stdout
        self.command = command
        lines = self.stderr.strip().splitlines()
        what = f"command {command!r}" if command else "command"
        tail = f": {lines[-1]}" if lines else ""
        super().__init__(f"{what} exited with status {exit_code}{tail}")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")


class SnapshotNotFound(ProviderLost):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"snapshot {key!r} is not in the snapshot store")


class SnapshotCorrupt(ProviderError):
    retryable = False

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(f"snapshot {key!r} failed verification: {detail}")


class UnsafeArchive(ProviderError):
    """A snapshot holds a member that would land outside the workspace; nothing was written."""

    retryable = False


class Unsupported(SandboxError):
    """The sandbox's provider cannot do what was asked (no ports, processes that a pause would stop);
    the message names the provider and the missing capability. Retrying will not help."""

    def __init__(self, provider: str, what: str, detail: str = "") -> None:
        self.provider = provider
        self.what = what
        super().__init__(f"the {provider} provider does not support {what}{'; ' + detail if detail else ''}")


class ProcessNotFound(SandboxError, LookupError):
    """No background process with this id in the sandbox (never started there, or the instance it ran
    in was replaced by a resume)."""

    def __init__(self, sandbox: str, pid: str) -> None:
        self.pid = pid
        super().__init__(f"no background process {pid!r} in sandbox {sandbox}")


class CapacityExceeded(SandboxError):
    """The fleet stayed full (``SANDBOX_MAX_LIVE`` or the kind's limit, or the provider's own ceiling)
    for the whole wait: every sandbox holding compute was busy and none idle could be suspended."""

    def __init__(self, kind: str, limit: int | None, limit_kind: str | None, waited: float) -> None:
        self.kind = kind
        self.limit = limit
        self.limit_kind = limit_kind
        self.waited = waited
        if limit is None:
            what = "the provider refused a new sandbox (its concurrency limit)"
        elif limit_kind is not None:
            what = f"{limit} {limit_kind!r} sandboxes already hold compute (SANDBOX_MAX_LIVE for the kind)"
        else:
            what = f"{limit} sandboxes already hold compute (SANDBOX_MAX_LIVE)"
        super().__init__(
            f"no capacity for a {kind!r} sandbox after waiting {waited:g}s: {what}, all busy; retry "
            "later, or raise the limit (or SANDBOX_CAPACITY_WAIT_MS)"
        )


class EgressRefused(SandboxError, ValueError):
    """An allow-list entry given to ``set_egress`` was refused (a raw IP, a private or metadata name, an
    unsupported wildcard, not a host); nothing was recorded. Retrying the same list will not help."""

    def __init__(self, sandbox: str, detail: str) -> None:
        self.sandbox = sandbox
        super().__init__(f"egress of sandbox {sandbox} not changed: {detail}")


class CredentialsRefused(SandboxError, ValueError):
    """Credentials given to ``set_credentials`` were refused (a host the sandbox's allow-list does not name,
    a header name or value HTTP cannot carry, a provider without an egress point that adds them); nothing
    was recorded or kept. The message names the host and the header, never a value."""

    def __init__(self, sandbox: str, detail: str) -> None:
        self.sandbox = sandbox
        super().__init__(f"credentials of sandbox {sandbox} not set: {detail}")
