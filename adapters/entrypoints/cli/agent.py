"""`sandboxctl agent ID [--continue] [--json] PROMPT`: one agent turn in a sandbox, its events streamed.

Human lines by default, one JSON object a line with --json (the events' ``to_dict`` form, the same a
backend forwards). The exit code is the agent's: 0 when its turn succeeded, 1 when it ended in error,
124 when it outlived --timeout, and 1 with a message when its model endpoint did not answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sandbox_lifecycle.adapters.agent.claude_code import (
    DEFAULT_MODEL_RETRIES,
    DEFAULT_MODEL_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    AgentTimeout,
    describe,
    run_agent,
)
from sandbox_lifecycle.adapters.agent.events import AgentEvent
from sandbox_lifecycle.core.ports import ExecResult

EXIT_AGENT_ERROR, EXIT_TIMEOUT = 1, 124


class _Sandbox:
    """What ``run_agent`` needs of a turn handle, for a sandbox named by id outside a turn (the service's
    exec resumes it if it is suspended, and counts the run as activity)."""

    def __init__(self, service: Any, sandbox_id: str) -> None:
        self._service = service
        self._id = sandbox_id

    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: Callable[[bytes], None] | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        result: ExecResult = self._service.exec(
            self._id,
            command,
            timeout=timeout,
            env=env,
            cwd=cwd,
            on_stdout=on_stdout,
            max_output_bytes=max_output_bytes,
        )
        return result


def _printer(as_json: bool) -> Callable[[AgentEvent], None]:
    def show(event: AgentEvent) -> None:
        line = json.dumps(event.to_dict(), ensure_ascii=False) if as_json else describe(event)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return show


def cmd_agent(args: argparse.Namespace, service: Any) -> int:
    try:
        result = run_agent(
            _Sandbox(service, args.id),
            args.prompt,
            continue_=args.continue_,
            on_event=_printer(args.json),
            timeout=args.timeout,
            model=args.model,
            model_timeout=args.model_timeout,
            model_retries=args.model_retries,
            cwd=args.cwd,
            bare=args.bare,
        )
    except AgentTimeout as exc:
        print(f"sandboxctl: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    return 0 if result.ok else EXIT_AGENT_ERROR


def register(
    add: Callable[..., argparse.ArgumentParser], service: Callable[[argparse.Namespace], Any]
) -> None:
    """Add the verb to the parser (``add`` is commands.build_parser's helper)."""
    sp = add(
        "agent",
        lambda args: cmd_agent(args, service(args)),
        "run the agent CLI for one turn in a sandbox, streaming its events; exits with the agent's status",
    )
    sp.add_argument("id")
    sp.add_argument("prompt")
    sp.add_argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="continue the sandbox's previous agent conversation",
    )
    sp.add_argument("--model", help="the model to ask for (default: the CLI's)")
    sp.add_argument(
        "--bare",
        action="store_true",
        help="the CLI's minimal mode: no hooks, plugins or CLAUDE.md discovery; starts faster",
    )
    sp.add_argument("--cwd", help="where the agent works (default: the kind's workdir)")
    sp.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds before the turn is killed"
    )
    sp.add_argument(
        "--model-timeout",
        type=float,
        default=DEFAULT_MODEL_TIMEOUT_S,
        help="seconds a model call may take to start answering before it is retried",
    )
    sp.add_argument(
        "--model-retries", type=int, default=DEFAULT_MODEL_RETRIES, help="retries of a failed model call"
    )
