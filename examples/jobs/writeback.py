"""The ai-writeback job: the sandbox clones the dbt project, the agent changes it, the job validates the
change, commits it on the conversation's branch and pushes; the backend gets the branch and the diff.

A later turn of the same conversation checks out the same branch (kept in the workspace snapshot) and
adds a commit to it, so the pull request grows with the conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox_lifecycle import HOME, AgentEvent, AgentResult, Author, run_agent

REPO = f"{HOME}/repo"
BASE = "main"
AGENT = Author("Lightdash AI", "ai@example.invalid")


@dataclass(frozen=True)
class Validation:
    tool: str  # "lightdash compile", "dbt parse", or "none"
    ok: bool
    output: str


@dataclass(frozen=True)
class WritebackTurn:
    branch: str
    commit: str | None  # None when the agent changed nothing
    diff: str  # the branch against main
    validation: Validation
    agent: AgentResult


def branch_for(conversation_id: str) -> str:
    return f"ai/{conversation_id}"


def validate(sbx: Any) -> Validation:
    """``lightdash compile`` where the image has the Lightdash CLI, else ``dbt parse`` (needs no database)."""
    probe = sbx.exec("command -v lightdash || true", cwd=REPO).stdout.strip()
    if probe:
        tool, command = (
            "lightdash compile",
            "lightdash compile --project-dir . --profiles-dir . --skip-warehouse-catalog",
        )
    elif sbx.exec("command -v dbt || true", cwd=REPO).stdout.strip():
        tool, command = "dbt parse", "dbt parse --project-dir . --profiles-dir . --no-use-colors"
    else:
        return Validation("none", True, "neither the Lightdash CLI nor dbt is in this sandbox")
    result = sbx.exec(command, cwd=REPO, timeout=300)
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
    return Validation(tool, result.exit_code == 0, tail)


def writeback_turn(
    sbx: Any,
    conversation_id: str,
    prompt: str,
    *,
    repo_url: str,
    token: str,
    on_event: Callable[[AgentEvent], None] | None = None,
    **agent: Any,
) -> WritebackTurn:
    branch = branch_for(conversation_id)
    first = not sbx.exists(f"{REPO}/.git")
    if first:
        # Into the kind's workdir (the repo checkout the snapshot keeps), named relatively: the same
        # argv works wherever the provider puts the sandbox home.
        sbx.git.at(REPO).clone(repo_url, ".", token=token)
    git = sbx.git.at(REPO)
    git.branch(branch)
    result = run_agent(sbx, prompt, continue_=not first, on_event=on_event, cwd=REPO, **agent)
    validation = validate(sbx)
    commit = None
    if git.status().strip():
        git.add()
        title = prompt.strip().splitlines()[0][:72]
        commit = git.commit(f"{title}\n\nValidated with {validation.tool}.", author=AGENT)
        git.push(token=token)
    return WritebackTurn(branch, commit, git.diff(BASE), validation, result)
