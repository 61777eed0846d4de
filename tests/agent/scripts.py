"""The scripted model's replies for the agent tests and the demo's shape: turn 1 writes a file with the
CLI's Write tool and runs it through Bash; turn 2 answers from what it is sent."""

from __future__ import annotations

import json
import re
from typing import Any

from sandbox_lifecycle.adapters.agent.scripted_model import Reply, Step, bash, write

_WORKDIR = re.compile(r"Primary working directory: (\S+)")


def workdir_of(body: dict[str, Any]) -> str:
    """The directory the CLI says it works in (its environment section, sent with every request)."""
    for text in _texts(body):
        match = _WORKDIR.search(text)
        if match:
            return match.group(1)
    raise AssertionError("the CLI stopped naming its working directory in the request")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    return []


def first_turn(content: str = "hello from turn 1\n") -> list[Step]:
    return [
        lambda body: Reply("I'll write the file.", [write(f"{workdir_of(body)}/hello.txt", content)]),
        Reply("", [bash("cat hello.txt && echo ran-ok")]),
        Reply("Done: wrote hello.txt and ran it."),
    ]


def second_turn() -> list[Step]:
    def answer(body: dict[str, Any]) -> Reply:
        seen = "hello.txt" in json.dumps(body["messages"])
        return Reply(f"Turn 2: I remember turn 1 ({'hello.txt seen' if seen else 'nothing seen'}).")

    return [answer]
