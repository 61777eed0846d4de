"""The scripted model's replies for the agent tests: turn 1 writes a file with the CLI's Write tool and
runs it through Bash; turn 2 answers from what it is sent."""

from __future__ import annotations

import json
from typing import Any

from sandbox_lifecycle.adapters.agent.scripted_model import Reply, Step, bash, working_directory, write


def first_turn(content: str = "hello from turn 1\n") -> list[Step]:
    return [
        lambda body: Reply("I'll write the file.", [write(f"{working_directory(body)}/hello.txt", content)]),
        Reply("", [bash("cat hello.txt && echo ran-ok")]),
        Reply("Done: wrote hello.txt and ran it."),
    ]


def second_turn() -> list[Step]:
    def answer(body: dict[str, Any]) -> Reply:
        seen = "hello.txt" in json.dumps(body["messages"])
        return Reply(f"Turn 2: I remember turn 1 ({'hello.txt seen' if seen else 'nothing seen'}).")

    return [answer]
