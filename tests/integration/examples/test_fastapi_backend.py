"""The FastAPI example under uvicorn on loopback: two turns of one conversation streamed as SSE, the
second resuming the first's sandbox and continuing its agent conversation; then the audit trail.

The service is the real module API (AsyncSandboxService over the SQLite log) on the host tier's provider
(the real agent CLI run on the host against the scripted model), until Docker sandboxes can reach a model.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from examples.fastapi_backend.app import create_app
from sandbox_lifecycle import AsyncSandboxService
from sandbox_lifecycle.adapters.agent.scripted_model import ScriptedModel
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from tests.support.agent_providers import AgentReadyProvider
from tests.support.agent_scripts import first_turn, second_turn


@pytest.fixture
def backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: ScriptedModel, host_claude: str
) -> Iterator[str]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    provider = AgentReadyProvider(
        sandbox_env={"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "scripted-no-secret"},
        path=os.path.dirname(host_claude),
    )
    service = AsyncSandboxService(build_service(provider=provider))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def turn(base: str, conversation: str, prompt: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with (
        httpx.Client(base_url=base, timeout=120) as client,
        client.stream(
            "POST", f"/conversations/{conversation}/turns", json={"prompt": prompt, "kind": "data-app"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                assert name is not None
                events.append((name, json.loads(line[6:])))
    return events


def test_two_turns_stream_sse_and_the_second_resumes_the_first(backend: str, model: ScriptedModel) -> None:
    model.extend(first_turn())
    one = turn(backend, "conv-api", "write hello.txt and run it")
    names = [n for n, _ in one]
    assert names[0] == "turn_start" and names[-1] == "turn_end", names
    assert {"session_started", "tool_use", "tool_result", "assistant_text", "result"} <= set(names)
    start, end = one[0][1], one[-1][1]
    assert start["continued"] is False
    assert end["status"] == "success" and end["state"] == "suspended"
    assert [d["name"] for n, d in one if n == "tool_use"] == ["Write", "Bash"]

    model.extend(second_turn())
    two = turn(backend, "conv-api", "what did you do?")
    assert two[0] == ("turn_start", {"sandbox_id": start["sandbox_id"], "continued": True})
    assert two[-1][1]["text"] == "Turn 2: I remember turn 1 (hello.txt seen)."

    history = httpx.get(f"{backend}/conversations/conv-api/history", timeout=30).json()
    (sandbox,) = history
    assert sandbox["sandbox_id"] == start["sandbox_id"] and sandbox["state"] == "suspended"
    types = [e["type"] for e in sandbox["events"]]
    assert types.count("TurnStarted") == 2 and types.count("Suspended") == 2 and "Resumed" in types
    assert httpx.get(f"{backend}/conversations/nobody/history", timeout=30).status_code == 404
