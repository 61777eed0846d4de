"""The main job, end to end: both kinds through the agent, on the embedded defaults and local Docker.

    ./scripts/demo            (python -m examples.demo)

ai-writeback: the sample dbt project is served by a git server on this machine, the sandbox clones it
through its egress point, the agent adds a metric, the job validates it, commits on the conversation's
branch and pushes; turn 2 amends the same branch. data-app: the agent writes and builds a page, the job
serves it detached, fetches it through ``sbx.url(port)`` and collects the build; turn 2 changes it after
the resume. Then the history of both sandboxes.

With ``ANTHROPIC_API_KEY`` set the agent talks to the real model (through the gateway: the key never
enters the sandbox). Without it, it talks to the bundled scripted model, which answers with the tool
calls a model would make; everything else (sandboxes, snapshots, git, the build, the network) is real.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

from examples.jobs.data_app import data_app_turn
from examples.jobs.git_server import GitServer
from examples.jobs.scripted import (
    DATA_APP_PROMPTS,
    SAMPLE_PROJECT,
    WRITEBACK_PROMPTS,
    data_app_turns,
    writeback_turns,
)
from examples.jobs.writeback import writeback_turn
from sandbox_lifecycle import AgentEvent, describe_agent_event, print_history
from sandbox_lifecycle.scripted_model import ScriptedModel

# The name the sandbox knows the git server by: a raw IP would be refused by the egress point.
GIT_HOST = "git.demo.internal"


def show(event: AgentEvent) -> None:
    print("   ", describe_agent_event(event)[:200], flush=True)


def main() -> int:
    import sandbox_lifecycle

    real_model = bool(os.environ.get("ANTHROPIC_API_KEY"))
    # Where the egress container reaches this host: the servers below listen there.
    host = sandbox_lifecycle.docker_host_address()
    token = uuid.uuid4().hex
    work = Path(tempfile.mkdtemp(prefix="sandbox-demo-"))
    (work / "git").mkdir()
    git = GitServer(work / "git", token, host=host).start()
    git.publish(SAMPLE_PROJECT, "jaffle")
    model: ScriptedModel | None = None
    if real_model:
        print("agent model: the real one (ANTHROPIC_API_KEY is set), reached through the gateway\n")
    else:
        model = ScriptedModel(host=host).start()
        # A loopback URL: the egress container is handed this host's bridge address, where it listens.
        os.environ["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{model.port}"
        os.environ["ANTHROPIC_API_KEY"] = "scripted-model-needs-no-key"
        print(
            "agent model: the BUNDLED SCRIPTED MODEL (ANTHROPIC_API_KEY is not set). The agent CLI, the\n"
            "sandboxes, git, the build and the network are real; the model's answers are scripted.\n"
        )
    os.environ.setdefault("SANDBOX_EGRESS_ALLOW_AI_WRITEBACK", f"{GIT_HOST}:{git.port}")
    os.environ.setdefault("SANDBOX_EGRESS_RESOLVE", f"{GIT_HOST}:{git.port}:{host}")
    service = sandbox_lifecycle.connect()
    caps = service.capabilities
    if not (caps.egress_allow_list and caps.ports):
        # Both bundled providers have both; a provider without them cannot reach the model or serve the app.
        git.stop()
        if model is not None:
            model.stop()
        print(
            f"this provider cannot give a sandbox its model and ports ({caps}); `sandboxctl demo` runs the "
            "file-level demo on any provider",
            file=sys.stderr,
        )
        return 1
    conversation = f"demo-{uuid.uuid4().hex[:8]}"
    ok = True
    try:
        scripts = writeback_turns()
        for n, prompt in enumerate(WRITEBACK_PROMPTS):
            if model is not None:
                model.extend(scripts[n])
            print(f"ai-writeback turn {n + 1}: {prompt}")
            with service.turn(conversation, "ai-writeback") as sbx:
                wb = writeback_turn(
                    sbx,
                    conversation,
                    prompt,
                    repo_url=git.url("jaffle", f"{GIT_HOST}"),
                    token=token,
                    on_event=show,
                )
            print(f"  validation ({wb.validation.tool}): {'ok' if wb.validation.ok else 'FAILED'}")
            print(f"  pushed {wb.branch} at {wb.commit}; the diff against main:")
            print("    " + git.diff("jaffle", "main", wb.branch).replace("\n", "\n    ").rstrip())
            ok = ok and wb.agent.ok and wb.validation.ok and wb.commit is not None
        writeback_id = sbx.id

        scripts = data_app_turns()
        for n, prompt in enumerate(DATA_APP_PROMPTS):
            if model is not None:
                model.extend(scripts[n])
            print(f"\ndata-app turn {n + 1}: {prompt}")
            with service.turn(conversation, "data-app") as app:
                da = data_app_turn(
                    app, prompt, collect_to=work / f"dist-{n + 1}", continue_=n > 0, on_event=show
                )
            print(f"  page title via {da.url}: {da.title!r}; collected {da.files} files ({da.bytes} bytes)")
            ok = ok and da.agent.ok and bool(da.title)
        for sandbox_id in (writeback_id, app.id):
            print(f"\nhistory of {sandbox_id}:")
            print_history(service.history(sandbox_id))
    finally:
        git.stop()
        if model is not None:
            model.stop()
    print(f"\nbuilds collected under {work}")
    print(f"clean up: sandboxctl destroy {writeback_id}; sandboxctl destroy {app.id}")
    if not ok:
        print("demo FAILED: see the steps above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
