"""The two sandbox kinds and what a snapshot of each one keeps."""

from __future__ import annotations

from sandbox_lifecycle.core.ports import WorkspaceSpec
from sandbox_lifecycle.events.values import FieldValues, value_class

DATA_APP = "data-app"
AI_WRITEBACK = "ai-writeback"

# The sandbox user's home. Images create user `sandbox` (uid 1000) with this home.
HOME = "/home/sandbox"


@value_class
class KindSpec(FieldValues):
    """What a kind of sandbox is: its name, its workspace and where its agent works."""

    name: str
    workspace: WorkspaceSpec
    # Where the agent works by default (exec cwd when none is given).
    workdir: str


KINDS: dict[str, KindSpec] = {
    DATA_APP: KindSpec(
        name=DATA_APP,
        # The app source and the agent's own state; dependencies are reinstalled, not snapshotted.
        workspace=WorkspaceSpec(
            root=HOME,
            include=("app", ".claude"),
            exclude=("**/node_modules", "**/.cache", "**/dist", "**/*.log"),
        ),
        workdir=f"{HOME}/app",
    ),
    AI_WRITEBACK: KindSpec(
        name=AI_WRITEBACK,
        # The dbt repo checkout (with its .git, so the branch and commits survive) and agent state.
        workspace=WorkspaceSpec(
            root=HOME,
            include=("repo", ".claude"),
            exclude=("repo/target", "repo/dbt_packages", "repo/logs", "**/__pycache__", "**/.venv"),
        ),
        workdir=f"{HOME}/repo",
    ),
}


def kind_spec(kind: str) -> KindSpec:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown sandbox kind {kind!r}; expected one of: {', '.join(KINDS)}") from None
