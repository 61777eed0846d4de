"""The bundled scripted model: an Anthropic Messages API on this host that answers with replies you script,
so the agent CLI runs (in tests, in the demo) without a model key. Standard library only.

    from sandbox_lifecycle.scripted_model import Reply, ScriptedModel, bash, write

    model = ScriptedModel([Reply("I'll build it.", [write("/home/sandbox/app/x.txt", "hi")]), Reply("Done.")])
    model.start()           # serves on model.url until model.stop()

A script is a list of steps, one per agent-loop request: a ``Reply`` (text and tool calls), a ``Fail`` (an
HTTP error answer) or a function of the request body returning one (``working_directory(body)`` is where
the CLI works). ``python -m sandbox_lifecycle.scripted_model --port 8089 --reply hello`` serves it alone.

The public name of ``sandbox_lifecycle.adapters.agent.scripted_model``, whose layout may change.
"""

from __future__ import annotations

from sandbox_lifecycle.adapters.agent.scripted_model import (
    MODEL,
    Fail,
    Recorded,
    Reply,
    ScriptedModel,
    Step,
    ToolCall,
    bash,
    main,
    working_directory,
    write,
)

__all__ = [
    "MODEL",
    "Fail",
    "Recorded",
    "Reply",
    "ScriptedModel",
    "Step",
    "ToolCall",
    "bash",
    "main",
    "working_directory",
    "write",
]

if __name__ == "__main__":
    raise SystemExit(main())
