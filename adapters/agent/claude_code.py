"""One agent turn: the Claude Code CLI run inside the sandbox, its stream-json output parsed as it arrives.

``run_agent(sbx, prompt)`` runs ``claude -p PROMPT --output-format stream-json --verbose`` through the
turn's ``exec`` (``--continue`` on later turns picks up the conversation the CLI keeps under
``~/.claude/projects/``, which the workspace snapshot holds), hands every parsed event to ``on_event`` while
the agent works, and returns an :class:`AgentResult`.

What the CLI does that this bounds (measured on Claude Code 2.1 in the sandbox images):

- An unreachable model endpoint is retried ten times with growing delays (more than three minutes for a
  refused connection, ten minutes a try for one that never answers). ``CLAUDE_CODE_MAX_RETRIES`` and
  ``API_TIMEOUT_MS`` (time until the response starts; a streaming answer may then run as long as it likes)
  bound that, and a turn that ended on a model-call failure raises :class:`ModelUnreachable`.
- Without ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` and friends it calls the public API host directly
  (telemetry, updates) whatever the base URL says; they are always set here.
- Tools must run without a person answering prompts: ``--permission-mode bypassPermissions`` (what
  ``--dangerously-skip-permissions`` means). The CLI refuses it for root unless ``IS_SANDBOX=1``; the
  sandbox is the boundary, so both are the default.

The model endpoint and its credential are not this module's business: the provider puts
``ANTHROPIC_BASE_URL`` (the gateway) and a per-sandbox token into the sandbox's environment. ``env`` adds
or overrides variables for this one command.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandbox_lifecycle.adapters.agent.events import (
    AgentEvent,
    AssistantText,
    LineSplitter,
    ModelRetry,
    Result,
    SessionStarted,
    ToolResult,
    ToolUse,
)
from sandbox_lifecycle.core.errors import ExecTimeout, SandboxError
from sandbox_lifecycle.core.ports import ExecResult

CLI = "claude"
# The CLI's switches that keep it to the base URL it is given.
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    # It does run in a sandbox: the CLI then accepts bypassPermissions even where the user is root (a
    # sandbox image running as root, the host-run test tier), which it refuses otherwise.
    "IS_SANDBOX": "1",
}
# Tools run without asking: nobody is there to answer, and the sandbox is the boundary.
BYPASS_PERMISSIONS: tuple[str, ...] = ("--permission-mode", "bypassPermissions")
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_MODEL_TIMEOUT_S = 60.0
DEFAULT_MODEL_RETRIES = 2

EventCallback = Callable[[AgentEvent], None]
AsyncEventCallback = Callable[[AgentEvent], Awaitable[None] | None]


class AgentError(SandboxError):
    """The agent's turn could not run to its end; carries the events seen so far."""

    def __init__(self, message: str, events: Sequence[AgentEvent] = (), stderr: str = "") -> None:
        self.events = list(events)
        self.stderr = stderr
        super().__init__(message)


class ModelUnreachable(AgentError):
    """The model endpoint did not answer (refused, timed out, failed) within the retries allowed."""


class AgentTimeout(AgentError):
    """The turn outlived its timeout; the CLI was killed."""


@dataclass(frozen=True)
class AgentResult:
    """What one turn produced. ``status`` is the CLI's (``success`` or ``error``); ``exit_code`` its exit."""

    status: str
    exit_code: int
    text: str
    session_id: str
    cost_usd: float
    usage: dict[str, Any]
    num_turns: int
    events: list[AgentEvent] = field(default_factory=list)
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "success" and self.exit_code == 0

    def tool_uses(self) -> list[ToolUse]:
        return [e for e in self.events if isinstance(e, ToolUse)]

    def texts(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, AssistantText)]


class SyncRunner(Protocol):
    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = ...,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        on_stdout: Callable[[bytes], None] | None = ...,
        max_output_bytes: int | None = ...,
    ) -> ExecResult: ...


class AsyncRunner(Protocol):
    async def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = ...,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        on_stdout: Any = ...,
        max_output_bytes: int | None = ...,
    ) -> ExecResult: ...


def agent_command(
    prompt: str,
    *,
    continue_: bool = False,
    model: str | None = None,
    permissions: Sequence[str] = BYPASS_PERMISSIONS,
    extra_args: Sequence[str] = (),
    cli: str = CLI,
    bare: bool = False,
) -> list[str]:
    """The argv of one turn. The prompt is one argument after ``--``: never parsed as an option."""
    argv = [cli, "-p", "--output-format", "stream-json", "--verbose", *permissions]
    if bare:
        argv.append("--bare")
    if continue_:
        argv.append("--continue")
    if model:
        argv += ["--model", model]
    return [*argv, *extra_args, "--", prompt]


def agent_env(
    env: Mapping[str, str] | None = None,
    *,
    model_timeout: float = DEFAULT_MODEL_TIMEOUT_S,
    model_retries: int = DEFAULT_MODEL_RETRIES,
) -> dict[str, str]:
    if model_timeout <= 0 or model_retries < 0:
        raise ValueError("model_timeout must be > 0 and model_retries >= 0")
    return {
        **QUIET_ENV,
        "API_TIMEOUT_MS": str(int(model_timeout * 1000)),
        "CLAUDE_CODE_MAX_RETRIES": str(model_retries),
        **(env or {}),
    }


class _Turn:
    """Collects one turn's events and decides its outcome (shared by the sync and async runners)."""

    def __init__(self) -> None:
        self.events: list[AgentEvent] = []
        self.lock = threading.Lock()

    def add(self, event: AgentEvent) -> None:
        with self.lock:
            self.events.append(event)

    def outcome(self, result: ExecResult) -> AgentResult:
        final = next((e for e in reversed(self.events) if isinstance(e, Result)), None)
        stderr = result.stderr.strip()
        if final is None:
            retried = any(isinstance(e, ModelRetry) for e in self.events)
            detail = stderr.splitlines()[-1] if stderr else "no output"
            if retried:
                raise ModelUnreachable(
                    f"the agent's model endpoint did not answer (exit {result.exit_code}): {detail}",
                    self.events,
                    stderr,
                )
            raise AgentError(
                f"the agent CLI exited {result.exit_code} without a result: {detail}", self.events, stderr
            )
        if final.terminal_reason == "api_error" or final.api_error:
            status = f" (HTTP {final.api_error_status})" if final.api_error_status else ""
            raise ModelUnreachable(
                f"the agent's model call failed{status}: {final.text or final.api_error}", self.events, stderr
            )
        return AgentResult(
            status=final.status,
            exit_code=result.exit_code,
            text=final.text,
            session_id=final.session_id,
            cost_usd=final.cost_usd,
            usage=final.usage,
            num_turns=final.num_turns,
            events=list(self.events),
            stderr=stderr,
        )

    def timed_out(self, exc: ExecTimeout) -> AgentTimeout:
        retried = sum(isinstance(e, ModelRetry) for e in self.events)
        hint = f"; the model endpoint failed {retried} time(s)" if retried else ""
        return AgentTimeout(
            f"the agent's turn outlived its {exc.timeout:g}s timeout and was killed{hint}",
            self.events,
            exc.stderr,
        )


def run_agent(
    sbx: SyncRunner,
    prompt: str,
    *,
    continue_: bool = False,
    on_event: EventCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    model: str | None = None,
    model_timeout: float = DEFAULT_MODEL_TIMEOUT_S,
    model_retries: int = DEFAULT_MODEL_RETRIES,
    permissions: Sequence[str] = BYPASS_PERMISSIONS,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cli: str = CLI,
    bare: bool = False,
) -> AgentResult:
    """Run one agent turn in ``sbx`` (a turn handle), streaming its events to ``on_event`` (called from the
    provider's reader thread, in order). Raises :class:`ModelUnreachable` when the model did not answer
    within ``model_retries`` retries of ``model_timeout`` s each, :class:`AgentTimeout` past ``timeout``.
    ``bare=True`` runs the CLI's minimal mode (no hooks, plugins, auto-memory or CLAUDE.md discovery):
    about 1.4 s less to start, measured."""
    turn = _Turn()

    def deliver(event: AgentEvent) -> None:
        turn.add(event)
        if on_event is not None:
            on_event(event)

    splitter = LineSplitter(deliver)
    try:
        result = sbx.exec(
            agent_command(
                prompt, continue_=continue_, model=model, permissions=permissions, cli=cli, bare=bare
            ),
            timeout=timeout,
            env=agent_env(env, model_timeout=model_timeout, model_retries=model_retries),
            cwd=cwd,
            on_stdout=splitter.feed,
            # The events hold what matters; the raw stream is not kept twice.
            max_output_bytes=64 * 1024,
        )
    except ExecTimeout as exc:
        splitter.close()
        raise turn.timed_out(exc) from exc
    splitter.close()
    return turn.outcome(result)


async def run_agent_async(
    sbx: AsyncRunner,
    prompt: str,
    *,
    continue_: bool = False,
    on_event: AsyncEventCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    model: str | None = None,
    model_timeout: float = DEFAULT_MODEL_TIMEOUT_S,
    model_retries: int = DEFAULT_MODEL_RETRIES,
    permissions: Sequence[str] = BYPASS_PERMISSIONS,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cli: str = CLI,
    bare: bool = False,
) -> AgentResult:
    """:func:`run_agent` for an async turn handle. ``on_event`` runs on the event loop, a plain function or
    a coroutine function (awaited before the next event: a slow consumer paces the agent's output)."""
    turn = _Turn()
    pending: list[AgentEvent] = []
    splitter = LineSplitter(pending.append)

    async def flush() -> None:
        while pending:
            event = pending.pop(0)
            turn.add(event)
            if on_event is not None:
                returned = on_event(event)
                if inspect.isawaitable(returned):
                    await returned

    async def on_stdout(chunk: bytes) -> None:
        splitter.feed(chunk)
        await flush()

    try:
        result = await sbx.exec(
            agent_command(
                prompt, continue_=continue_, model=model, permissions=permissions, cli=cli, bare=bare
            ),
            timeout=timeout,
            env=agent_env(env, model_timeout=model_timeout, model_retries=model_retries),
            cwd=cwd,
            on_stdout=on_stdout,
            max_output_bytes=64 * 1024,
        )
    except ExecTimeout as exc:
        splitter.close()
        await flush()
        raise turn.timed_out(exc) from exc
    splitter.close()
    await flush()
    return turn.outcome(result)


def describe(event: AgentEvent) -> str:
    """One human line for an event (the CLI verb and the demo print these)."""
    if isinstance(event, SessionStarted):
        return f"[session] {event.session_id} model={event.model} cwd={event.cwd}"
    if isinstance(event, AssistantText):
        return f"[assistant] {event.text}"
    if isinstance(event, ToolUse):
        shown = event.input.get("command") or event.input.get("file_path") or event.input
        return f"[tool] {event.name}: {shown}"
    if isinstance(event, ToolResult):
        first = event.content.strip().splitlines()[0] if event.content.strip() else ""
        more = " ..." if event.content.strip().count("\n") else ""
        return f"[tool {'error' if event.is_error else 'result'}] {first}{more}"
    if isinstance(event, ModelRetry):
        when = f"in {event.retry_delay_ms} ms"
        return f"[model retry] attempt {event.attempt}/{event.max_retries} {when} ({event.error})"
    if isinstance(event, Result):
        return (
            f"[result] {event.status}: {event.text} "
            f"(turns={event.num_turns}, cost=${event.cost_usd:.4f}, {event.duration_ms} ms)"
        )
    return f"[{event.kind}]"
