"""The agent CLI's ``--output-format stream-json`` lines, parsed into typed events a backend can forward.

One stdout line is one JSON object. Its ``type`` says what it is: ``system`` (``init`` when the session
starts, ``api_retry`` when a model call failed and will be retried), ``assistant`` (a model message: text,
tool calls, thinking), ``user`` (the tool results the CLI sends back), ``result`` (the turn's outcome, cost
and usage). An assistant or user line may hold several content blocks, so one line gives one or more events.
Anything this module does not know (a new line type, a new block type, a line that is not JSON) becomes an
:class:`Unknown` holding the raw value: a newer CLI never loses output, it only arrives untyped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class AgentEvent:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: ``{"type": kind, ...fields}`` (what ``sandboxctl agent --json`` prints)."""
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class SessionStarted(AgentEvent):
    kind: ClassVar[str] = "session_started"
    session_id: str
    model: str
    cwd: str
    tools: tuple[str, ...] = ()
    version: str = ""


@dataclass(frozen=True)
class AssistantText(AgentEvent):
    kind: ClassVar[str] = "assistant_text"
    text: str
    message_id: str = ""


@dataclass(frozen=True)
class Thinking(AgentEvent):
    kind: ClassVar[str] = "thinking"
    text: str
    message_id: str = ""


@dataclass(frozen=True)
class ToolUse(AgentEvent):
    kind: ClassVar[str] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]
    message_id: str = ""


@dataclass(frozen=True)
class ToolResult(AgentEvent):
    kind: ClassVar[str] = "tool_result"
    tool_use_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class ModelRetry(AgentEvent):
    """A model call failed (connection refused, timeout, 5xx) and the CLI will try again after a delay."""

    kind: ClassVar[str] = "model_retry"
    attempt: int
    max_retries: int
    retry_delay_ms: int
    error: str = ""
    error_status: int | None = None


@dataclass(frozen=True)
class Result(AgentEvent):
    """The turn's outcome. ``status`` is ``success`` or ``error``; ``api_error`` names a model-call failure
    (``connection_failed``, ...) when the turn ended on one."""

    kind: ClassVar[str] = "result"
    status: str
    text: str
    session_id: str = ""
    num_turns: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    terminal_reason: str | None = None
    api_error: str | None = None
    api_error_status: int | None = None

    @property
    def is_error(self) -> bool:
        return self.status != "success"


@dataclass(frozen=True)
class Unknown(AgentEvent):
    """A line or block this parser has no type for, kept whole."""

    kind: ClassVar[str] = "unknown"
    raw: Any


def parse_line(line: str | bytes) -> list[AgentEvent]:
    """The events of one stream-json line (empty for a blank line)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return []
    try:
        obj = json.loads(text)
    except ValueError:
        return [Unknown({"line": text})]
    if not isinstance(obj, dict):
        return [Unknown(obj)]
    try:
        return _parse(obj)
    except (KeyError, TypeError, ValueError, AttributeError):
        # A known type with an unexpected shape: kept raw rather than half-parsed.
        return [Unknown(obj)]


def _parse(obj: dict[str, Any]) -> list[AgentEvent]:
    kind = obj.get("type")
    if kind == "system":
        return [_system(obj)]
    if kind == "assistant":
        return list(_assistant(obj))
    if kind == "user":
        return list(_user(obj))
    if kind == "result":
        return [_result(obj)]
    return [Unknown(obj)]


def _system(obj: dict[str, Any]) -> AgentEvent:
    subtype = obj.get("subtype")
    if subtype == "init":
        return SessionStarted(
            session_id=str(obj["session_id"]),
            model=str(obj.get("model", "")),
            cwd=str(obj.get("cwd", "")),
            tools=tuple(str(t) for t in obj.get("tools", ())),
            version=str(obj.get("claude_code_version", "")),
        )
    if subtype == "api_retry":
        status = obj.get("error_status")
        return ModelRetry(
            attempt=int(obj["attempt"]),
            max_retries=int(obj.get("max_retries", 0)),
            retry_delay_ms=int(obj.get("retry_delay_ms", 0)),
            error=str(obj.get("error", "")),
            error_status=int(status) if status is not None else None,
        )
    return Unknown(obj)


def _assistant(obj: dict[str, Any]) -> Iterator[AgentEvent]:
    message = obj["message"]
    mid = str(message.get("id", ""))
    for block in message.get("content", ()):
        btype = block.get("type")
        if btype == "text":
            yield AssistantText(text=str(block["text"]), message_id=mid)
        elif btype == "tool_use":
            yield ToolUse(
                id=str(block["id"]), name=str(block["name"]), input=dict(block["input"]), message_id=mid
            )
        elif btype == "thinking":
            yield Thinking(text=str(block.get("thinking", "")), message_id=mid)
        else:
            yield Unknown({"type": "assistant", "block": block})


def _user(obj: dict[str, Any]) -> Iterator[AgentEvent]:
    content = obj["message"].get("content", ())
    if isinstance(content, str):  # a plain user message echoed back
        yield Unknown(obj)
        return
    for block in content:
        if block.get("type") == "tool_result":
            yield ToolResult(
                tool_use_id=str(block["tool_use_id"]),
                content=_flatten(block.get("content", "")),
                is_error=bool(block.get("is_error", False)),
            )
        else:
            yield Unknown({"type": "user", "block": block})


def _flatten(content: Any) -> str:
    # A tool result is a string or a list of blocks (text, images); the text is what a person reads.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", "")) if isinstance(b, dict) and b.get("type") == "text" else f"[{_type(b)}]"
            for b in content
        )
    return json.dumps(content)


def _type(block: Any) -> str:
    return str(block.get("type", "block")) if isinstance(block, dict) else "block"


def _result(obj: dict[str, Any]) -> Result:
    is_error = bool(obj.get("is_error", False)) or obj.get("subtype", "success") != "success"
    status = obj.get("api_error_status")
    return Result(
        status="error" if is_error else "success",
        text=str(obj.get("result", "")),
        session_id=str(obj.get("session_id", "")),
        num_turns=int(obj.get("num_turns", 0)),
        cost_usd=float(obj.get("total_cost_usd", 0.0)),
        duration_ms=int(obj.get("duration_ms", 0)),
        usage=dict(obj.get("usage") or {}),
        stop_reason=obj.get("stop_reason"),
        terminal_reason=obj.get("terminal_reason"),
        api_error=obj.get("api_error"),
        api_error_status=int(status) if status is not None else None,
    )


class LineSplitter:
    """Turns the exec's stdout chunks (split anywhere, even inside a UTF-8 character) into whole lines.

    A line longer than ``max_line_bytes`` is not held in memory whole: it becomes an :class:`Unknown`
    saying how long it was (a tool result quoting a huge file), and the stream goes on after it.
    """

    def __init__(
        self, on_event: Callable[[AgentEvent], None], *, max_line_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self._on_event = on_event
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = 0

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._hold(chunk[start:])
                return
            self._hold(chunk[start:end])
            self._line()
            start = end + 1

    def close(self) -> None:
        """The stream ended: a last line without its newline is still a line."""
        if self._buffer or self._skipping:
            self._line()

    def _hold(self, piece: bytes) -> None:
        if self._skipping:
            self._skipping += len(piece)
        elif len(self._buffer) + len(piece) > self._max:
            self._skipping = len(self._buffer) + len(piece)
            self._buffer.clear()
        else:
            self._buffer += piece

    def _line(self) -> None:
        if self._skipping:
            self._on_event(Unknown({"skipped_line_bytes": self._skipping}))
            self._skipping = 0
            return
        line = bytes(self._buffer)
        self._buffer.clear()
        for event in parse_line(line):
            self._on_event(event)


def event_from_dict(data: dict[str, Any]) -> AgentEvent:
    """The inverse of :meth:`AgentEvent.to_dict` (a client reading ``--json`` or SSE output back)."""
    kind = data.get("type")
    for cls in (SessionStarted, AssistantText, Thinking, ToolUse, ToolResult, ModelRetry, Result, Unknown):
        if cls.kind == kind:
            fields = {k: v for k, v in data.items() if k != "type"}
            if cls is SessionStarted and "tools" in fields:
                fields["tools"] = tuple(fields["tools"])
            return cls(**fields)
    return Unknown(data)
