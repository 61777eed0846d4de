"""A backend embedding sandbox-lifecycle: one service for the process, the timer ticker in the lifespan,
an agent turn streamed to the client as server-sent events, the audit trail on request.

    SANDBOX_PROVIDER=docker uvicorn examples.fastapi_backend.app:app --host 127.0.0.1 --port 8000

    curl -N -X POST localhost:8000/conversations/c1/turns -H 'content-type: application/json' \\
         -d '{"prompt": "build a revenue page", "kind": "data-app"}'
    curl localhost:8000/conversations/c1/history

A turn creates the conversation's sandbox or resumes it, runs the agent (``--continue`` when the
sandbox already holds an agent conversation), and suspends it when the agent is done. Each agent event
is one SSE message (``event:`` its type, ``data:`` its JSON); the last is ``turn_end`` (or ``error``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import sandbox_lifecycle
from sandbox_lifecycle import HOME, AsyncSandboxService

# Where the agent CLI keeps its conversations: present once a turn has run in this sandbox.
AGENT_STATE = f"{HOME}/.claude/projects"


class TurnRequest(BaseModel):
    prompt: str
    kind: str = sandbox_lifecycle.DATA_APP


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def create_app(
    service: AsyncSandboxService | None = None, *, agent_options: Mapping[str, Any] | None = None
) -> FastAPI:
    """The app; ``service`` replaces ``connect_async()`` (tests), ``agent_options`` go to run_agent."""
    options = dict(agent_options or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service if service is not None else await asyncio.to_thread(sandbox_lifecycle.connect_async)
        app.state.service = svc
        try:
            async with sandbox_lifecycle.run_scheduler(svc):
                yield
        finally:
            if service is None:
                await svc.aclose()

    app = FastAPI(title="sandbox-lifecycle backend example", lifespan=lifespan)

    @app.post("/conversations/{conversation_id}/turns")
    async def turn(conversation_id: str, request: TurnRequest) -> StreamingResponse:
        if request.kind not in sandbox_lifecycle.KINDS:
            raise HTTPException(422, f"kind must be one of {sorted(sandbox_lifecycle.KINDS)}")
        svc: AsyncSandboxService = app.state.service
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def run() -> None:
            # The turn runs to its end (and suspends the sandbox) even if the client goes away.
            try:
                async with svc.turn(conversation_id, request.kind) as sbx:
                    continued = await sbx.exists(AGENT_STATE)
                    await queue.put(sse("turn_start", {"sandbox_id": sbx.id, "continued": continued}))
                    result = await sandbox_lifecycle.run_agent_async(
                        sbx,
                        request.prompt,
                        continue_=continued,
                        on_event=lambda e: queue.put(sse(e.kind, e.to_dict())),
                        **options,
                    )
                row = await svc.get(sbx.id)
                await queue.put(
                    sse(
                        "turn_end",
                        {
                            "sandbox_id": sbx.id,
                            "status": result.status,
                            "text": result.text,
                            "state": row.state,
                        },
                    )
                )
            except Exception as exc:  # the client is told; the sandbox was suspended by the turn's exit
                await queue.put(sse("error", {"type": type(exc).__name__, "message": str(exc)}))
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())

        async def stream() -> AsyncIterator[bytes]:
            while (item := await queue.get()) is not None:
                yield item
            await task

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/conversations/{conversation_id}/history")
    async def history(conversation_id: str) -> list[dict[str, Any]]:
        svc: AsyncSandboxService = app.state.service
        rows = [r for r in await svc.list() if r.conversation_id == conversation_id]
        if not rows:
            raise HTTPException(404, f"no sandbox for conversation {conversation_id!r}")
        out = []
        for row in rows:
            entries = await svc.history(row.id)
            out.append(
                {
                    "sandbox_id": row.id,
                    "kind": row.kind,
                    "state": row.state,
                    "events": [
                        {
                            "version": e.version,
                            "type": e.type,
                            "occurred_at": e.occurred_at.isoformat(),
                            "from_state": e.from_state,
                            "to_state": e.to_state,
                            "reason": e.reason,
                            "actor": e.actor,
                        }
                        for e in entries
                    ],
                }
            )
        return out

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn examples.fastapi_backend.app:app`: built on first use, so importing the module for
    # create_app does not read the environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
