"""A scripted Anthropic Messages API: the model the agent CLI talks to when no real key is at hand.

It ships in the package, not only in tests/, because ``sandboxctl demo`` runs the agent against it when
``ANTHROPIC_API_KEY`` is unset, and the demo must work from an installed wheel. Standard library only.

A script is a list of replies, consumed one per *agent-loop* request (a request that offers tools): each
reply is some text and/or tool calls (the CLI's ``Write``, ``Bash``, ...). Requests without tools (the CLI's
side calls: titles, topic checks, quota probes) get a short text answer and leave the script alone. Every
request is recorded (path, headers without credentials, parsed body), so a test can assert that turn 2's
request carries turn 1's messages. Streaming answers are server-sent events in the exact format of the
real API (``message_start``, ``content_block_start/delta/stop`` with ``text_delta`` and
``input_json_delta``, ``message_delta`` with ``stop_reason`` and ``usage``, ``message_stop``).

Run it alone: ``python -m sandbox_lifecycle.adapters.agent.scripted_model --port 8089``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MODEL = "claude-scripted-1"
# Headers never recorded: the key (or the gateway's token) must not end up in a test's assertion output.
_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: f"toolu_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class Reply:
    """One model response: text first (if any), then the tool calls (if any)."""

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()

    @property
    def stop_reason(self) -> str:
        return "tool_use" if self.tool_calls else "end_turn"

    def content(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        for call in self.tool_calls:
            blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input})
        return blocks


@dataclass(frozen=True)
class Fail:
    """An HTTP error answer, as the real API gives one (``overloaded_error`` 529, ``authentication_error``
    401, ...)."""

    status: int
    error_type: str = "api_error"
    message: str = "scripted failure"


# A step is a fixed reply, a failure, or a function of the request body (to echo, or to branch on it).
Step = Reply | Fail | Callable[[dict[str, Any]], "Reply | Fail"]


def write(path: str, content: str) -> ToolCall:
    """The CLI's file-writing tool (``Write``: absolute path, whole content)."""
    return ToolCall("Write", {"file_path": path, "content": content})


def bash(command: str, description: str = "run a command") -> ToolCall:
    """The CLI's shell tool."""
    return ToolCall("Bash", {"command": command, "description": description})


_WORKDIR = re.compile(r"Primary working directory: (\S+)")


def working_directory(body: dict[str, Any]) -> str:
    """The directory the CLI says it works in (its environment section, sent with every request): a
    scripted reply writes files there with absolute paths, as the CLI's Write tool wants."""
    for text in _texts(body):
        match = _WORKDIR.search(text)
        if match:
            return match.group(1)
    raise ValueError("the request does not name the CLI's working directory")


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    # The credential's sha256, not the credential: a test compares it with the key it expects.
    api_key_sha256: str | None = None


def _tokens(body: Any) -> int:
    # A rough, deterministic count: about four characters a token, as the real tokenizer averages.
    return max(1, len(json.dumps(body, separators=(",", ":"))) // 4)


class ScriptedModel:
    """A threaded HTTP server on ``host:port`` (0 picks a free port) answering from ``script``."""

    def __init__(
        self,
        script: Sequence[Step] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        exhausted: Reply | None = None,
    ) -> None:
        self._script: list[Step] = list(script)
        self._exhausted = exhausted or Reply("The scripted model has no more replies.")
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.unknown: list[str] = []
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-model", daemon=True)

    # ------------------------------------------------------------------------------------ control

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def start(self) -> ScriptedModel:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the command-line entry point)."""
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def extend(self, steps: Sequence[Step]) -> None:
        """Queue more replies (the next turn's)."""
        with self._lock:
            self._script.extend(steps)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def agent_requests(self) -> list[dict[str, Any]]:
        """The bodies of the agent-loop requests (the ones that consumed the script), in order."""
        return [r.body for r in self.requests if r.path.startswith("/v1/messages") and _is_agent_loop(r.body)]

    # ----------------------------------------------------------------------------------- answering

    def _next(self, body: dict[str, Any]) -> Reply | Fail:
        if not _is_agent_loop(body):
            return Reply("ok")
        with self._lock:
            step = self._script.pop(0) if self._script else self._exhausted
        return step(body) if callable(step) else step

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("scripted model: " + format, *args)

            def _record(self, body: Any) -> None:
                headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in _SECRET_HEADERS}
                key = self.headers.get("x-api-key")
                digest = hashlib.sha256(key.encode()).hexdigest() if key else None
                with model._lock:
                    model.requests.append(Recorded(self.command, self.path, headers, body, digest))

            def _read_body(self) -> Any:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not raw:
                    return None
                try:
                    return json.loads(raw)
                except ValueError:
                    return raw.decode("utf-8", "replace")

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._record(None)
                self._json(200, {})

            def do_GET(self) -> None:
                self._record(None)
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/v1/models":
                    entry = {
                        "type": "model",
                        "id": MODEL,
                        "display_name": "Scripted",
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                    self._json(200, {"data": [entry], "has_more": False, "first_id": MODEL, "last_id": MODEL})
                elif path.startswith("/v1/models/"):
                    self._json(
                        200, {"type": "model", "id": path.rsplit("/", 1)[1], "display_name": "Scripted"}
                    )
                elif path in ("", "/"):
                    self._json(200, {"ok": True})
                else:
                    self._unknown()

            def do_POST(self) -> None:
                body = self._read_body()
                self._record(body)
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/v1/messages/count_tokens":
                    self._json(200, {"input_tokens": _tokens(body)})
                elif path == "/v1/messages" and isinstance(body, dict):
                    reply = model._next(body)
                    if isinstance(reply, Fail):
                        self._json(reply.status, _error(reply.error_type, reply.message))
                    elif body.get("stream"):
                        self._stream(body, reply)
                    else:
                        self._json(200, _message(body, reply))
                else:
                    self._unknown()

            def _unknown(self) -> None:
                log.warning("scripted model: unknown request %s %s", self.command, self.path)
                with model._lock:
                    model.unknown.append(f"{self.command} {self.path}")
                self._json(404, _error("not_found_error", f"{self.command} {self.path} is not scripted"))

            def _stream(self, body: dict[str, Any], reply: Reply) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("transfer-encoding", "chunked")
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
                self.end_headers()
                for event, data in _events(body, reply):
                    chunk = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler


def _is_agent_loop(body: Any) -> bool:
    return isinstance(body, dict) and bool(body.get("tools"))


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    return {
        "input_tokens": _tokens(body.get("messages", [])),
        "output_tokens": _tokens(reply.content()),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _message(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or MODEL,
        "content": reply.content(),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(body, reply),
    }


def _events(body: dict[str, Any], reply: Reply) -> Iterator[tuple[str, dict[str, Any]]]:
    usage = _usage(body, reply)
    start = _message(body, reply) | {"content": [], "stop_reason": None}
    start["usage"] = usage | {"output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(reply.content()):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in _pieces(block["text"], 24):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        else:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": block["id"],
                        "name": block["name"],
                        "input": {},
                    },
                },
            )
            for piece in _pieces(json.dumps(block["input"]), 40):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _pieces(text: str, size: int) -> Iterator[str]:
    # Split as the real API does, in several deltas, so a client that only handles one delta fails here.
    for i in range(0, len(text), size):
        yield text[i : i + size]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a scripted Anthropic Messages API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--reply", action="append", default=[], help="a text reply (repeatable, in order)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = ScriptedModel([Reply(t) for t in args.reply], host=args.host, port=args.port)
    print(f"scripted model on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
