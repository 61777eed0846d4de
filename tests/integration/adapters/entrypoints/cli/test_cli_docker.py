"""`sandboxctl` end to end as a subprocess, on the Docker provider and the embedded defaults.

Everything goes through the installed entry point with the environment a developer would set
(SANDBOX_PROVIDER=docker, a data dir): the SQLite log and the snapshot directory are the embedded defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_lifecycle.adapters.composition.settings import Settings
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.providers import deployment_of_env, remove_docker_sandboxes

pytestmark = pytest.mark.docker

SANDBOXCTL = str(Path(sys.executable).with_name("sandboxctl"))
# The session-prefixed deployment tests/conftest.py gives each test: what the CLI makes carries it.
KEEP = "SANDBOX_DEPLOYMENT"
# The shape `create`/`show` promise (DESIGN.md §5) and `history` entries' exact keys.
ROW_KEYS = {"id", "kind", "state", "provider", "conversation_id", "version"}
HISTORY_KEYS = {"version", "type", "occurred_at", "from_state", "to_state", "reason", "actor"}


def base_env(data_dir: Path) -> dict[str, str]:
    # Nothing of the calling shell may pick another database, bucket or environment for the CLI.
    dropped = ("SANDBOX_", "S3_", "E2B_", "NODE_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) or k == KEEP}
    env.update(
        SANDBOX_PROVIDER="docker",
        SANDBOX_DATA_DIR=str(data_dir),
        SANDBOX_DOCKER_IMAGE=DOCKER_IMAGES["data-app"],
        SANDBOX_AI_WRITEBACK_DOCKER_IMAGE=DOCKER_IMAGES["ai-writeback"],
    )
    return env


class Ctl:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.created: list[str] = []

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SANDBOXCTL, *argv], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *argv: str) -> str:
        done = self.run(*argv)
        assert done.returncode == 0, f"sandboxctl {' '.join(argv)} -> {done.returncode}: {done.stderr}"
        return done.stdout

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--json"))


@pytest.fixture
def ctl(docker_client: Any, tmp_path: Path) -> Iterator[Ctl]:
    c = Ctl(base_env(tmp_path))
    try:
        yield c
    finally:
        remove_docker_sandboxes(docker_client, sandbox_ids=c.created, deployments=[deployment_of_env(c.env)])


def test_sandboxctl_lifecycle_on_docker(ctl: Ctl, docker_client: Any) -> None:
    created = ctl.json("create", "--kind", "data-app", "--conversation", "cli-conv")
    sid = created["id"]
    ctl.created.append(sid)
    assert created.keys() >= ROW_KEYS
    assert {k: created[k] for k in ROW_KEYS - {"id", "version"}} == {
        "kind": "data-app",
        "state": "idle",
        "provider": "docker",
        "conversation_id": "cli-conv",
    }

    # stdout and the command's own exit code pass through.
    done = ctl.run("exec", sid, "--", "sh", "-c", "echo hi; echo oops >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, "hi\n", "oops\n")
    assert ctl.run("exec", sid, "--", "sh", "-c", "echo kept > kept.txt").returncode == 0

    suspended = ctl.json("suspend", sid)
    assert suspended["state"] == "suspended"
    assert docker_client.containers.list(all=True, filters={"name": f"sbx-{sid}"}) == []

    # exec on a suspended sandbox resumes it, with the workspace it had.
    done = ctl.run("exec", sid, "--", "cat", "kept.txt")
    assert (done.returncode, done.stdout) == (0, "kept\n")
    assert ctl.json("show", sid)["state"] == "idle"

    touched = ctl.json("touch", sid)
    assert touched["id"] == sid and touched["state"] == "idle"

    shown = ctl.json("show", sid)
    assert shown.keys() >= ROW_KEYS and shown["state"] == "idle" and shown["provider_ref"]

    history = ctl.json("history", sid)
    assert all(HISTORY_KEYS <= set(entry) <= HISTORY_KEYS | {"detail", "usage"} for entry in history)
    # Docker meters: the suspend's run is recorded with it, its numbers under "usage".
    (usage,) = [e for e in history if e["type"] == "UsageRecorded"]
    assert usage["usage"]["cpu_seconds"] > 0 and usage["detail"].startswith("UsageRecorded cpu=")
    assert [e["version"] for e in history] == list(range(1, len(history) + 1))
    assert [e["version"] for e in history][-1] == shown["version"]
    moves = [(e["type"], e["from_state"], e["to_state"]) for e in history]
    for step in [
        ("CreationRequested", "new", "creating"),
        ("Created", "creating", "idle"),
        ("SuspendRequested", "idle", "suspending"),
        ("Suspended", "suspending", "suspended"),
        ("ResumeRequested", "suspended", "resuming"),
        ("Resumed", "resuming", "idle"),
    ]:
        assert step in moves, moves
    assert ctl.ok("history", sid).count("\n") == len(history) + 1  # header + one line per event

    assert [r["id"] for r in ctl.json("ls", "--state", "idle")] == [sid]
    assert ctl.json("ls", "--state", "suspended") == []

    verified = ctl.run("replay", "--verify")
    assert verified.returncode == 0 and "projections match the log" in verified.stdout

    assert ctl.json("destroy", sid)["state"] == "expired"
    shown = ctl.json("show", sid)
    assert (shown["state"], shown["expired_reason"]) == ("expired", "user")
    assert docker_client.containers.list(all=True, filters={"name": f"sbx-{sid}"}) == []
    # A destroyed sandbox refuses work with the "expired" exit code and says why.
    done = ctl.run("exec", sid, "--", "true")
    assert done.returncode == 5 and "expired" in done.stderr
    assert ctl.run("replay", "--verify").returncode == 0


def test_docker_provider_refuses_production(ctl: Ctl, docker_client: Any) -> None:
    ctl.env["NODE_ENV"] = "production"

    done = ctl.run("create", "--kind", "data-app", "--json")

    assert done.returncode == 1
    assert "NODE_ENV=production" in done.stderr and "SANDBOX_PROVIDER=e2b" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    # The refusal leaves nothing running: no live sandbox in the log, no container on the engine.
    ctl.env.pop("NODE_ENV")
    rows = ctl.json("ls")
    ctl.created += [r["id"] for r in rows]
    assert [r for r in rows if r["state"] != "expired"] == []
    for row in rows:
        assert docker_client.containers.list(all=True, filters={"name": f"sbx-{row['id']}"}) == []


def test_production_refusal_writes_nothing_to_the_log(ctl: Ctl) -> None:
    ctl.env["NODE_ENV"] = "production"
    assert ctl.run("create", "--kind", "data-app").returncode == 1
    ctl.env.pop("NODE_ENV")

    rows = ctl.json("ls")
    ctl.created += [r["id"] for r in rows]
    # A configuration the product refuses is not a sandbox that failed: the audit log stays empty.
    assert rows == []


def test_an_idempotent_create_retry_through_the_cli_returns_the_first_sandbox(
    ctl: Ctl, docker_client: Any
) -> None:
    first = ctl.json("create", "--kind", "data-app", "--idempotency-key", "cli-key")
    ctl.created.append(first["id"])
    assert ctl.run("exec", first["id"], "--", "sh", "-c", "echo kept > kept.txt").returncode == 0
    shown = ctl.json("show", first["id"])

    again = ctl.run("create", "--kind", "data-app", "--idempotency-key", "cli-key", "--json")

    assert again.returncode == 0, again.stderr
    assert "destroying" not in again.stderr
    assert json.loads(again.stdout) == shown
    done = ctl.run("exec", first["id"], "--", "cat", "kept.txt")
    assert (done.returncode, done.stdout) == (0, "kept\n")
    assert len(docker_client.containers.list(filters={"name": f"sbx-{first['id']}"})) == 1


def test_an_unusable_snapshot_dir_fails_the_side_effect_with_one_line_and_no_stuck_state(
    ctl: Ctl, docker_client: Any, tmp_path: Path
) -> None:
    created = ctl.json("create", "--kind", "data-app")
    sid = created["id"]
    ctl.created.append(sid)
    # A snapshot directory the store cannot write into: where this deployment's folder belongs stands a
    # file, so the upload fails with an OSError inside the side effect, once the suspend's intent is in
    # the log. (A SANDBOX_SNAPSHOT_DIR that is itself a file is refused before anything is written.)
    unusable = tmp_path / "unusable-snapshots"
    unusable.mkdir()
    deployment = Settings.from_env(ctl.env).deployment
    (unusable / deployment).write_text("")
    broken = Ctl({**ctl.env, "SANDBOX_SNAPSHOT_DIR": str(unusable)})

    done = broken.run("suspend", sid)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "cannot create a snapshot file" in line, done.stderr
    # The intent got its outcome: back to idle with the container kept, not stuck in suspending.
    shown = ctl.json("show", sid)
    assert shown["state"] == "idle", shown
    assert [e["type"] for e in ctl.json("history", sid)][-2:] == ["SuspendRequested", "SuspendFailed"]
    assert ctl.run("exec", sid, "--", "true").returncode == 0
    assert ctl.json("suspend", sid)["state"] == "suspended"
    assert ctl.run("replay", "--verify").returncode == 0


def test_sandboxctl_exec_streams_live_and_a_timeout_keeps_the_output(ctl: Ctl) -> None:
    sid = ctl.json("create", "--kind", "data-app")["id"]
    ctl.created.append(sid)
    # stderr merged into stdout: the order in which a person at the terminal sees them.
    proc = subprocess.Popen(
        [SANDBOXCTL, "exec", "--timeout", "2", sid, "--", "sh", "-c", "echo hi; sleep 5"],
        env=ctl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[tuple[float, bytes]] = []
    for line in iter(proc.stdout.readline, b""):  # ends when sandboxctl exits (bounded by its timeout)
        lines.append((time.monotonic(), line))
    code = proc.wait(timeout=60)
    ended = time.monotonic()

    assert code == 124, lines
    assert lines[0][1] == b"hi\n", lines
    assert b"timed out after 2s" in b"".join(line for _, line in lines[1:])
    # Printed as the command wrote it, not when the call ended: well before the 2 s timeout fired.
    assert ended - lines[0][0] >= 1.5


def test_sandboxctl_checkpoints_rewind_and_fork(ctl: Ctl) -> None:
    sid = ctl.json("create", "--kind", "data-app")["id"]
    ctl.created.append(sid)
    ctl.ok("exec", sid, "--", "sh", "-c", "echo A > a.txt")
    ctl.ok("suspend", sid)
    ctl.ok("exec", sid, "--", "sh", "-c", "echo B > b.txt")
    ctl.ok("suspend", sid)
    first, second = ctl.json("checkpoints", sid)
    assert first["reason"] == "user" and first["bytes"] > 0
    # Checkpoints of pieces: each suspend stored only its new pieces (b.txt's, the second time).
    assert 0 < second["bytes_new"] <= first["bytes_new"] + 64
    assert (first["current"], second["current"]) == (False, True)
    assert ctl.ok("checkpoints", sid).count("\n") == 3  # header + one line each

    # An unknown version is a usage error, and nothing is written.
    done = ctl.run("rewind", sid, "--to", "999")
    assert done.returncode == 2 and "no checkpoint at version 999" in done.stderr
    assert ctl.json("rewind", sid, "--to", str(first["version"]))["state"] == "suspended"
    done = ctl.run("exec", sid, "--", "sh", "-c", "cat a.txt; ls b.txt")
    assert done.stdout == "A\n" and done.returncode != 0

    fork = ctl.json("fork", sid, "--at", str(first["version"]), "--conversation", "forked")
    ctl.created.append(fork["id"])
    assert (fork["state"], fork["kind"], fork["conversation_id"]) == ("suspended", "data-app", "forked")
    assert f"ForkedFrom {sid}@{first['version']}" in ctl.ok("history", fork["id"])
    assert any(e.get("detail") == f"Forked {fork['id']}@{first['version']}" for e in ctl.json("history", sid))
    assert ctl.run("replay", "--verify").returncode == 0
