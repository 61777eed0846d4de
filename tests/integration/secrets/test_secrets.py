"""Secrets, proven: planted credentials appear nowhere they must not, after a real multi-turn scenario.

Every credential a deployment holds is planted with a recognisable value: the Anthropic key, the E2B
key, an S3 secret and a git token. A conversation of several turns then runs through `sandboxctl` (a
subprocess, `-v` so its logs are captured too, `--json` where a command has it), on Docker and on the
loopback E2B server, and afterwards everything a person or the sandbox could read is searched:

* the database file (and its WAL), every line the CLI printed on stdout and stderr, error messages;
* `docker inspect` of every container of the deployment, taken while they run;
* the sandbox's own environment (`exec -- env`, and for E2B the create-time envs the fake holds) and
  its files (copied out with `sandboxctl cp`, or the fake's directory for E2B);
* the gateway's state directory, except `upstream.json`, the one file that must hold the key;
* on Docker, every page of `sandboxctl console` (served with a planted `SANDBOX_CONSOLE_TOKEN`), their
  headers, its live feed and what it printed: neither a credential nor the console's own token shows.

The Anthropic key must appear in none of them; on E2B with `SANDBOX_GATEWAY_PUBLIC_URL` the sandbox's
model calls still work (the upstream sees the real key, the sandbox only its token). The E2B key, the S3
secret and the git token are used only by the clients that sign with them, so they appear in none
either. Kept in a file of its own so later egress work (the Docker gateway) extends the same scenario.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOCKER_IMAGES
from tests.support import session
from tests.support.fake_e2b import FakeE2B
from tests.support.fake_upstream import fake_upstream, running_gateway

SANDBOXCTL = str(Path(sys.executable).with_name("sandboxctl"))

ANTHROPIC_KEY = "sk-ant-api03-PLANTED-anthropic-" + uuid.uuid4().hex
E2B_KEY = "e2b_PLANTED_" + uuid.uuid4().hex
S3_SECRET = "PLANTED-s3-secret-" + uuid.uuid4().hex
GIT_TOKEN = "ghp_PLANTED" + uuid.uuid4().hex
CONSOLE_TOKEN = "PLANTED-console-" + uuid.uuid4().hex
PLANTED = {
    "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
    "E2B_API_KEY": E2B_KEY,
    "S3_SECRET_KEY": S3_SECRET,
    "git": GIT_TOKEN,
    "SANDBOX_CONSOLE_TOKEN": CONSOLE_TOKEN,
}

ENV_MARK = "--- env ---"
MODEL_CALL = (
    "import os, urllib.request; "
    "r = urllib.request.Request(os.environ['ANTHROPIC_BASE_URL'] + '/v1/messages', data=b'{}', "
    "headers={'x-api-key': os.environ['ANTHROPIC_API_KEY']}); "
    "print(urllib.request.urlopen(r, timeout=10).read().decode())"
)


@dataclass
class Evidence:
    """Everything that was searched, by where it came from."""

    texts: dict[str, bytes] = field(default_factory=dict)

    def add(self, where: str, data: bytes | str) -> None:
        self.texts[where] = self.texts.get(where, b"") + (data.encode() if isinstance(data, str) else data)

    def add_tree(self, where: str, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                self.add(f"{where}/{path.relative_to(root)}", path.read_bytes())

    def leaks(self, secret: str) -> list[str]:
        return [where for where, data in self.texts.items() if secret.encode() in data]


class Ctl:
    def __init__(self, env: dict[str, str], evidence: Evidence) -> None:
        self.env = env
        self.evidence = evidence

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [SANDBOXCTL, "-v", *argv], env=self.env, capture_output=True, text=True, timeout=180, check=False
        )
        self.evidence.add(f"sandboxctl {argv[0]} stdout", done.stdout)
        self.evidence.add(f"sandboxctl {argv[0]} stderr", done.stderr)
        return done

    def ok(self, *argv: str) -> str:
        done = self.run(*argv)
        assert done.returncode == 0, (
            f"sandboxctl {' '.join(argv)} -> {done.returncode}: {done.stderr[-2000:]}"
        )
        return done.stdout

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--json"))


def clean_env(data_dir: Path) -> dict[str, str]:
    import os

    dropped = ("SANDBOX_", "S3_", "E2B_", "NODE_ENV", "ANTHROPIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        SANDBOX_DATA_DIR=str(data_dir),
        SANDBOX_DEPLOYMENT=session.new_deployment("sec"),
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        S3_ACCESS_KEY="PLANTEDACCESS",
        S3_SECRET_KEY=S3_SECRET,
        # The variable core.git reads inside one git command, and the usual host-side names: present
        # in the backend's environment, they must not travel anywhere on their own.
        SANDBOX_GIT_TOKEN=GIT_TOKEN,
        GITHUB_TOKEN=GIT_TOKEN,
    )
    return env


def conversation(
    ctl: Ctl, tmp_path: Path, *, model_calls: bool, during: Any = None
) -> tuple[str, dict[str, str]]:
    """Two turns and the read commands around them; returns the sandbox id and its environment.

    Few commands, each doing a turn's worth: every `sandboxctl` call pays the CLI's start-up."""
    created = ctl.json("create", "--kind", "data-app", "--conversation", "secrets-conv")
    sid = created["id"]
    model = f"{shlex.quote(sys.executable)} -c {shlex.quote(MODEL_CALL)}" if model_calls else "true"
    turn_one = ctl.ok("exec", sid, "--", "sh", "-c", f"echo turn one > notes.txt && {model}")
    if during is not None:
        during(sid)
    ctl.json("suspend", sid)
    # Turn two resumes the sandbox, then shows what its processes see.
    turn_two = ctl.ok("exec", sid, "--", "sh", "-c", f"cat notes.txt && {model} && echo {ENV_MARK} && env")
    answer, _, env_out = turn_two.partition(ENV_MARK + "\n")
    assert answer.startswith("turn one")
    if model_calls:
        assert "message_stop" in turn_one and "message_stop" in answer
    ctl.evidence.add("sandbox env", env_out)
    ctl.ok("cp", f"{sid}:.", str(tmp_path / "copied"))
    ctl.evidence.add_tree("sandbox files", tmp_path / "copied")
    ctl.json("ls")
    ctl.json("history", sid)
    ctl.ok("doctor")
    # An error a person would see.
    assert ctl.run("show", "no-such-sandbox").returncode != 0
    ctl.json("destroy", sid)
    env = dict(line.split("=", 1) for line in env_out.splitlines() if "=" in line)
    return sid, env


def read_console(ctl: Ctl, sid: str) -> None:
    """Every page of `sandboxctl console` over the scenario's log, as its token's holder sees them (the
    headers too), a moment of its live feed, the sign-in redirect, and what the console printed."""
    import contextlib
    import http.client
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = ctl.env | {"SANDBOX_CONSOLE_TOKEN": CONSOLE_TOKEN}
    proc = subprocess.Popen(
        [SANDBOXCTL, "-v", "console", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        bearer = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        paths = [
            "/",
            f"/sandboxes/{sid}",
            "/audit",
            "/live",
            "/static/console.js",
            f"/?token={CONSOLE_TOKEN}",
        ]
        for path in [*paths, "/live/events?after=0"]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers=bearer if "token=" not in path else {})
            answer = conn.getresponse()
            lines: list[bytes] = []
            if path.startswith("/live/events"):
                # The feed never ends: what arrives in 2 s (the whole log, from position 0) is enough.
                with contextlib.suppress(TimeoutError):
                    while line := answer.readline():
                        lines.append(line)
                assert any(b"Destroyed" in line for line in lines), "the feed sent the log"
            else:
                lines.append(answer.read())
            body = b"".join(lines)
            conn.close()
            assert answer.status in (200, 303), (path, answer.status)
            ctl.evidence.add(f"console {path.split('?')[0]}", body + str(answer.getheaders()).encode())
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    ctl.evidence.add("sandboxctl console stdout", out)
    ctl.evidence.add("sandboxctl console stderr", err)


def collect_database(evidence: Evidence, data_dir: Path) -> None:
    for path in data_dir.glob("sandbox.db*"):
        evidence.add(f"database {path.name}", path.read_bytes())
    assert any(where.startswith("database") for where in evidence.texts)


def collect_gateway_state(evidence: Evidence, state_dir: Path) -> None:
    """The state directory, but for ``upstream.json``: the one file that must hold the key."""
    upstream = state_dir / "upstream.json"
    if upstream.exists():
        assert ANTHROPIC_KEY in upstream.read_text()
    for path in sorted(state_dir.rglob("*")) if state_dir.exists() else []:
        if path.is_file() and not path.is_symlink() and path != upstream:
            evidence.add(f"gateway state/{path.relative_to(state_dir)}", path.read_bytes())


def assert_no_leaks(evidence: Evidence) -> None:
    leaks = {name: found for name, secret in PLANTED.items() if (found := evidence.leaks(secret))}
    assert leaks == {}, f"planted secrets found in: {leaks}"


# ------------------------------------------------------------------------------------------------ Docker


@pytest.mark.docker
@pytest.mark.s3
def test_no_secret_leaks_on_docker(tmp_path: Path, docker_engine: Any, moto_endpoint: str) -> None:
    from tests.support.fixtures.providers import remove_docker_sandboxes

    evidence = Evidence()
    env = clean_env(tmp_path / "data")
    env.update(
        SANDBOX_PROVIDER="docker",
        SANDBOX_DOCKER_IMAGE=DOCKER_IMAGES["data-app"],
        SANDBOX_AI_WRITEBACK_DOCKER_IMAGE=DOCKER_IMAGES["ai-writeback"],
        # Snapshots go to S3, so the S3 secret is in real use (signing every request).
        S3_BUCKET="secrets-" + uuid.uuid4().hex[:8],
        S3_ENDPOINT=moto_endpoint,
        S3_REGION="us-east-1",
        # Not used by the Docker provider; still present in a deployment's environment.
        E2B_API_KEY=E2B_KEY,
        # Where the egress point keeps its state (tokens, the upstream key), when the provider runs one.
        SANDBOX_EGRESS_STATE_DIR=str(tmp_path / "egress"),
    )
    ctl = Ctl(env, evidence)
    deployment = env["SANDBOX_DEPLOYMENT"]

    def inspect_containers(_sid: str) -> None:
        containers = docker_engine.containers.list(
            all=True, filters={"label": f"sandbox-lifecycle.deployment={deployment}"}
        )
        assert containers, "the sandbox should have a container while it runs"
        for container in containers:
            evidence.add(f"docker inspect {container.name}", json.dumps(container.attrs))

    try:
        sid, sandbox_env = conversation(ctl, tmp_path, model_calls=False, during=inspect_containers)
        read_console(ctl, sid)
    finally:
        remove_docker_sandboxes(docker_engine, deployments=[deployment])
    collect_database(evidence, tmp_path / "data")
    collect_gateway_state(evidence, tmp_path / "egress")
    # Docker sandboxes get no key today; with the egress network they get a gateway token instead.
    assert sandbox_env.get("ANTHROPIC_API_KEY", "sbx-").startswith("sbx-")
    assert_no_leaks(evidence)


# ------------------------------------------------------------------------------------------------ E2B


def test_no_secret_leaks_on_e2b_with_the_gateway(tmp_path: Path) -> None:
    evidence = Evidence()
    fake = FakeE2B(E2B_KEY, tmp_path / "e2b")
    fake.start()
    state_dir = tmp_path / "egress"
    try:
        with fake_upstream() as upstream, running_gateway(state_dir) as gateway:
            env = clean_env(tmp_path / "data")
            env.update(
                SANDBOX_PROVIDER="e2b",
                E2B_API_KEY=E2B_KEY,
                E2B_API_URL=fake.url,
                E2B_SANDBOX_URL=fake.url,
                E2B_TEMPLATE_TAG="v1",
                ANTHROPIC_BASE_URL=upstream.url,
                SANDBOX_GATEWAY_PUBLIC_URL=gateway.url,
                SANDBOX_EGRESS_STATE_DIR=str(state_dir),
            )
            ctl = Ctl(env, evidence)

            def create_time_envs(_sid: str) -> None:
                for sandbox in fake.sandboxes():
                    evidence.add(f"e2b create envs of {sandbox.sandbox_id}", json.dumps(sandbox.env_vars))

            _sid, sandbox_env = conversation(ctl, tmp_path, model_calls=True, during=create_time_envs)
            # Both turns' model calls went out with the real key, and only to the upstream.
            assert [s.headers["x-api-key"] for s in upstream.seen] == [ANTHROPIC_KEY, ANTHROPIC_KEY]
    finally:
        fake.stop()
    assert sandbox_env["ANTHROPIC_API_KEY"].startswith("sbx-")
    evidence.add("e2b requests", repr(fake.requests()))
    evidence.add_tree("e2b sandbox directories", tmp_path / "e2b")
    collect_gateway_state(evidence, state_dir)
    collect_database(evidence, tmp_path / "data")
    assert_no_leaks(evidence)


# ------------------------------------------------------------------------------------ Docker: writeback


DEPLOY_TOKEN = "PLANTED-deployment-credential-" + uuid.uuid4().hex


@pytest.mark.docker
def test_no_git_token_leaks_on_docker_writeback(
    tmp_path: Path, docker_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The ai-writeback job's clone and push with the planted git token, through the egress point (a TLS
    git server of the test, trusted with SANDBOX_EGRESS_UPSTREAM_CA), plus a deployment-wide credential
    from SANDBOX_EGRESS_CREDENTIALS: neither is in the log, a log line, the CLI's output, a container's
    configuration or logs, the sandbox, or the egress state (but the deployment's own credentials file)."""
    import logging

    from sandbox_lifecycle.adapters.composition.bootstrap import build_service
    from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
    from sandbox_lifecycle.core.git import Author
    from sandbox_lifecycle.core.kinds import HOME
    from tests.integration.adapters.providers.docker.test_egress_credentials import LOOK
    from tests.integration.adapters.providers.docker.test_git_push_egress import (
        GIT_HOST,
        TLSGitServer,
        seeded,
    )
    from tests.support.fixtures.providers import remove_docker_sandboxes

    caplog.set_level(logging.DEBUG)
    evidence = Evidence()
    address = bridge_host_address(docker_engine.api.inspect_network("bridge"))
    server = TLSGitServer(seeded(tmp_path), GIT_TOKEN, address, tmp_path / "ca")
    server.start()
    host = f"{GIT_HOST}:{server.port}"
    env = clean_env(tmp_path / "data")
    env.update(
        SANDBOX_PROVIDER="docker",
        SANDBOX_DOCKER_IMAGE=DOCKER_IMAGES["data-app"],
        SANDBOX_AI_WRITEBACK_DOCKER_IMAGE=DOCKER_IMAGES["ai-writeback"],
        SANDBOX_EGRESS_STATE_DIR=str(tmp_path / "egress"),
        SANDBOX_EGRESS_ALLOW_AI_WRITEBACK=host,
        SANDBOX_EGRESS_RESOLVE=f"{host}:{address}",
        SANDBOX_EGRESS_UPSTREAM_CA=str(server.ca.ca),
        SANDBOX_EGRESS_CREDENTIALS=f"{host}=X-Deploy-Token:DEPLOY_TOKEN",
        DEPLOY_TOKEN=DEPLOY_TOKEN,
    )
    planted = {**PLANTED, "deployment credential": DEPLOY_TOKEN}
    deployment = env["SANDBOX_DEPLOYMENT"]
    ctl = Ctl(env, evidence)
    try:
        service = build_service(env)
        url = f"https://{host}/project.git"
        with service.turn("secrets-wb", "ai-writeback") as sbx:
            repo = sbx.git.at(HOME).clone(url, "project", token=GIT_TOKEN)
            sbx.write_file(f"{HOME}/project/notes.yml", "x: 1\n")
            repo.branch("agent/notes")
            repo.add()
            repo.commit("notes", author=Author("A", "a@example.invalid"))
            repo.push(token=GIT_TOKEN)
            looked = sbx.exec(["python3", "-c", LOOK, GIT_TOKEN.encode().hex()], timeout=120)
            looked_deploy = sbx.exec(["python3", "-c", LOOK, DEPLOY_TOKEN.encode().hex()], timeout=120)
            for container in docker_engine.containers.list(
                all=True, filters={"label": f"sandbox-lifecycle.deployment={deployment}"}
            ):
                evidence.add(f"docker inspect {container.name}", json.dumps(container.attrs))
                evidence.add(f"docker logs {container.name}", container.logs())
            sid = sbx.id
        evidence.add("sandbox look", looked.stdout + looked.stderr + looked_deploy.stdout)
        assert "HOLDS-SECRET" not in looked.stdout + looked_deploy.stdout
        ctl.json("history", sid)
        ctl.ok("events", "--sandbox", sid, "--json")
        ctl.json("show", sid)
    finally:
        server.stop()
        remove_docker_sandboxes(docker_engine, deployments=[deployment])
    # The pushes reached the server with the token and the deployment's header, from the egress point.
    assert server.requests and all(auth for _, auth in server.requests)
    evidence.add("log records", "\n".join(r.getMessage() for r in caplog.records))
    collect_database(evidence, tmp_path / "data")
    deployment_file = tmp_path / "egress" / "credentials" / "deployment.json"
    assert DEPLOY_TOKEN in deployment_file.read_text()  # the one file that must hold it
    for path in sorted((tmp_path / "egress").rglob("*")):
        if path.is_file() and path not in (deployment_file, tmp_path / "egress" / "upstream.json"):
            evidence.add(f"egress state/{path.relative_to(tmp_path / 'egress')}", path.read_bytes())
    leaks = {name: found for name, secret in planted.items() if (found := evidence.leaks(secret))}
    assert leaks == {}, f"planted secrets found in: {leaks}"
