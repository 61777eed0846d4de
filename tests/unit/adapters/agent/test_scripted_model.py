"""The scripted Messages API speaks the real wire format: SSE events in order, JSON, the side endpoints."""

from __future__ import annotations

import hashlib
import http.client
import json
from typing import Any

from sandbox_lifecycle.adapters.agent.scripted_model import Fail, Reply, ScriptedModel, bash, write

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def post(
    model: ScriptedModel, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", model.port, timeout=10)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("content-type") or "", data


def sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in data.decode().split("\n\n"):
        if frame.strip():
            lines = dict(line.split(": ", 1) for line in frame.splitlines())
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_a_streamed_reply_is_the_api_event_sequence_and_rebuilds_the_message(model: ScriptedModel) -> None:
    call = write("/home/sandbox/app/a.txt", "x" * 100)
    model.extend([Reply("Writing it now, in several deltas.", [call, bash("ls")])])
    body = {"model": "m", "stream": True, "tools": TOOLS, "messages": [{"role": "user", "content": "go"}]}
    status, ctype, data = post(model, "/v1/messages?beta=true", body, {"x-api-key": "secret-token"})
    assert status == 200 and ctype == "text/event-stream"
    events = sse(data)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert all(name == payload["type"] for name, payload in events)
    # Rebuild the content as a client does: text deltas appended, input_json_delta joined then parsed.
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for name, payload in events:
        if name == "content_block_start":
            blocks[payload["index"]] = dict(payload["content_block"])
        elif name == "content_block_delta":
            delta = payload["delta"]
            if delta["type"] == "text_delta":
                blocks[payload["index"]]["text"] += delta["text"]
            else:
                partial[payload["index"]] = partial.get(payload["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and payload["index"] in partial:
            blocks[payload["index"]]["input"] = json.loads(partial[payload["index"]])
    assert [b["type"] for b in blocks.values()] == ["text", "tool_use", "tool_use"]
    assert blocks[0]["text"] == "Writing it now, in several deltas."
    assert blocks[1]["name"] == "Write" and blocks[1]["input"] == call.input and blocks[1]["id"] == call.id
    assert len([n for n in names if n == "content_block_delta"]) > 3  # split, as the real API splits
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] > 0
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0
    # Recorded without the credential.
    assert model.agent_requests() == [body]
    assert "x-api-key" not in model.requests[0].headers
    assert model.requests[0].api_key_sha256 == hashlib.sha256(b"secret-token").hexdigest()


def test_json_replies_side_calls_count_tokens_models_and_unknown_paths(model: ScriptedModel) -> None:
    model.extend([Reply("final"), Fail(529, "overloaded_error", "busy")])
    body = {"model": "m", "tools": TOOLS, "messages": [{"role": "user", "content": "hi"}]}
    status, _, data = post(model, "/v1/messages", body)
    message = json.loads(data)
    assert status == 200 and message["content"] == [{"type": "text", "text": "final"}]
    assert message["stop_reason"] == "end_turn" and message["role"] == "assistant"
    # A request without tools is a side call (a title, a quota probe): answered, the script untouched.
    status, _, data = post(model, "/v1/messages", {"model": "m", "max_tokens": 1, "messages": []})
    assert status == 200 and json.loads(data)["content"][0]["text"] == "ok" and model.remaining == 1
    status, _, data = post(model, "/v1/messages", body)
    assert status == 529 and json.loads(data)["error"]["type"] == "overloaded_error"
    status, _, data = post(model, "/v1/messages/count_tokens", body)
    assert status == 200 and json.loads(data)["input_tokens"] > 0
    conn = http.client.HTTPConnection("127.0.0.1", model.port, timeout=10)
    conn.request("GET", "/v1/models")
    assert json.loads(conn.getresponse().read())["data"][0]["type"] == "model"
    conn.request("GET", "/v1/elsewhere")
    resp = conn.getresponse()
    assert resp.status == 404 and json.loads(resp.read())["type"] == "error"
    conn.close()
    assert model.unknown == ["GET /v1/elsewhere"]
    # Exhausted: a plain final answer, so a CLI never waits on a script that ran out.
    status, _, data = post(model, "/v1/messages", body)
    assert json.loads(data)["content"][0]["text"].startswith("The scripted model has no more replies")
