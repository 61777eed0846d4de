"""A short command loads only what it uses: no alembic once the schema is current, and only the chosen
provider's library. Each case runs in a fresh interpreter, where sys.modules tells what was imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_lifecycle.events import migrate, revision
from tests.support import session

UNUSED = ("alembic", "e2b", "boto3", "botocore", "psycopg", "prometheus_client", "rich")

_MODULES_PROBE = """
import json, sys
from sandbox_lifecycle.adapters.entrypoints.cli.commands import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(sys.modules)}))
"""

PROBE_DEPLOYMENT = session.new_deployment("importprobe")


def modules_loaded_by(data_dir: Path, *argv: str) -> tuple[int, set[str]]:
    """(exit code, every module loaded) of one `sandboxctl` command in a fresh interpreter."""
    env = {
        **os.environ,
        "SANDBOX_PROVIDER": "docker",
        "SANDBOX_DATA_DIR": str(data_dir),
        "SANDBOX_DEPLOYMENT": PROBE_DEPLOYMENT,
    }
    for name in ("SANDBOX_DATABASE_URL", "S3_BUCKET", "E2B_API_KEY", "SANDBOX_LOG_FORMAT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _MODULES_PROBE, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return int(report["code"]), set(report["loaded"])


def run_cli(data_dir: Path, *argv: str) -> tuple[int, set[str]]:
    """(exit code, the top-level packages loaded) of one `sandboxctl` command in a fresh interpreter."""
    code, loaded = modules_loaded_by(data_dir, *argv)
    return code, {name.split(".")[0] for name in loaded}


def test_a_current_sqlite_schema_is_checked_without_alembic(tmp_path: Path) -> None:
    # The first command creates and migrates the embedded log: that one needs alembic.
    code, loaded = run_cli(tmp_path, "ls", "--json")
    assert code == 0 and "alembic" in loaded
    code, loaded = run_cli(tmp_path, "ls", "--json")
    assert code == 0
    assert not loaded & set(UNUSED), loaded & set(UNUSED)
    # A read of rows needs no provider, and on an up-to-date SQLite file not even SQLAlchemy.
    assert "docker" not in loaded and "sqlalchemy" not in loaded


@pytest.mark.docker
def test_a_docker_command_loads_docker_and_nothing_else(tmp_path: Path, docker_engine: object) -> None:
    # An exec talks to the engine through the stdlib client: neither the docker SDK nor requests/urllib3
    # under it load (they cost more than the exec itself), on a sandbox that is missing or running.
    sdk = {"docker", "requests", "urllib3"}
    run_cli(tmp_path, "ls")  # migrate first
    code, loaded = run_cli(tmp_path, "exec", "0000000000000000", "--", "true")
    assert code == 4  # no such sandbox: the provider was built, the log was read
    assert not loaded & sdk, loaded & sdk
    assert not loaded & set(UNUSED), loaded & set(UNUSED)

    import shutil

    from sandbox_lifecycle.adapters.composition.bootstrap import build_service
    from tests.support.fixtures.docker import DEFAULT_EGRESS_DIR, remove_network_leftovers

    env = {**os.environ, "SANDBOX_PROVIDER": "docker", "SANDBOX_DATA_DIR": str(tmp_path)}
    env["SANDBOX_DEPLOYMENT"] = PROBE_DEPLOYMENT
    env.pop("SANDBOX_DATABASE_URL", None)
    env.pop("S3_BUCKET", None)
    service = build_service(env)
    row = service.create("data-app")
    try:
        code, loaded = run_cli(tmp_path, "exec", row.id, "--", "true")
        assert code == 0
        assert not loaded & sdk, loaded & sdk
        assert not loaded & set(UNUSED), loaded & set(UNUSED)
    finally:
        service.destroy(row.id)
        remove_network_leftovers(docker_engine, f"sandbox-lifecycle.deployment={PROBE_DEPLOYMENT}")
        shutil.rmtree(os.path.join(DEFAULT_EGRESS_DIR, PROBE_DEPLOYMENT), ignore_errors=True)


def test_the_scanned_head_is_alembics_head() -> None:
    assert revision.head_revision() == migrate.head()


def test_the_one_query_revision_matches_alembic_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    assert revision.current_revision(url, tmp_path / "log.db") is None  # no file yet
    migrate.upgrade(url)
    assert revision.current_revision(url, tmp_path / "log.db") == migrate.current(url) == migrate.head()


@pytest.mark.postgres
def test_the_one_query_revision_matches_alembic_on_postgres(shared_pg_url: str) -> None:
    assert revision.current_revision(shared_pg_url) == migrate.current(shared_pg_url) == migrate.head()


# Loaded only by the verbs that use them: each cost a short command a noticeable share of its start-up.
# asyncio (with ssl) only for the async service and feed; importlib.metadata only when the package
# version is read; uuid only to make an id; transitions only for `edges` and the diagram; the verbs'
# modules only when their verb runs; git and history only when asked for.
LAZY = (
    "asyncio",
    "ssl",
    "importlib.metadata",
    "rich",
    "uuid",
    "transitions",
    "concurrent.futures.thread",
    "sandbox_lifecycle.adapters.agent",
    "sandbox_lifecycle.adapters.entrypoints.cli.agent",
    "sandbox_lifecycle.adapters.entrypoints.cli.audit",
    "sandbox_lifecycle.adapters.entrypoints.cli.gateway",
    "sandbox_lifecycle.adapters.entrypoints.cli.processes",
    "sandbox_lifecycle.core.git",
    "sandbox_lifecycle.core.replay",
)


def test_ls_loads_neither_the_service_nor_what_other_verbs_need(tmp_path: Path) -> None:
    modules_loaded_by(tmp_path, "ls")  # creates and migrates the log
    for argv in (("ls",), ("ls", "--json"), ("ls", "--state", "idle")):
        code, loaded = modules_loaded_by(tmp_path, *argv)  # piped: plain text, no rich
        assert code == 0
        # --json writes with orjson, which imports uuid itself.
        lazy = set(LAZY) - ({"uuid"} if "--json" in argv else set())
        assert not loaded & lazy, loaded & lazy
        # Rows are read and printed: no decider, no event types, no egress policy, no id to hash.
        unused = {
            "sandbox_lifecycle.core.service",
            "sandbox_lifecycle.core.sandbox",
            "sandbox_lifecycle.events.types",
            "sandbox_lifecycle.events.codec",
            "sandbox_lifecycle.adapters.egress.policy",
            "hashlib",
            "shutil",  # argparse's terminal size, looked up with os instead
        }
        assert not loaded & unused, loaded & unused


def test_the_exec_path_of_our_own_code_loads_none_of_them() -> None:
    # The CLI, the settings, the logging set-up and the service with its codec, as `sandboxctl exec`
    # loads them, without the provider and the store (which bring their own libraries).
    probe = """
import json, os, sys
from sandbox_lifecycle.adapters.entrypoints.cli.commands import parse_args
from sandbox_lifecycle.adapters.observability.logs import configure_logging
from sandbox_lifecycle.adapters.composition.scrubbing import environ_secrets
from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.core import service
from sandbox_lifecycle.events import codec
args = parse_args(["exec", "0000000000000000", "--timeout", "5", "--env", "A=1", "--", "true"])
assert args.cmd == "exec" and args.command == ["true"]
Settings.from_env({"SANDBOX_PROVIDER": "docker", "SANDBOX_DEPLOYMENT": "importprobe"})
configure_logging(30, "text", environ_secrets(os.environ))
print(json.dumps(sorted(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    # Nor hashlib (idempotency keys, database-named deployments) or the egress policy parser (allow-lists
    # the environment changed): the store's hash chain and the provider load what they need themselves.
    lazy = {*LAZY, "hashlib", "sandbox_lifecycle.adapters.egress.policy"}
    assert not loaded & lazy, loaded & lazy


@pytest.mark.docker
def test_exec_loads_no_other_verbs_module(tmp_path: Path, docker_engine: object) -> None:
    modules_loaded_by(tmp_path, "ls")  # migrate first
    code, loaded = modules_loaded_by(tmp_path, "exec", "0000000000000000", "--", "true")
    assert code == 4  # no such sandbox: the provider was built, the log was read
    ours = {name for name in LAZY if name.startswith("sandbox_lifecycle.")} | {"rich", "transitions"}
    assert not loaded & ours, loaded & ours


def test_a_verb_parses_as_it_did_when_every_verb_was_built() -> None:
    from sandbox_lifecycle.adapters.entrypoints.cli import commands

    full = commands.build_parser()
    for argv in (
        ["exec", "abc", "--timeout", "5", "--cwd", "/tmp", "--env", "A=1"],
        ["ls", "--state", "idle", "--json"],
        ["-v", "show", "abc"],
        ["ps", "abc", "--json"],
        ["audit", "verify", "--json"],
        ["db", "upgrade"],
        ["agent", "abc", "hello", "--bare"],
        ["touch", "abc"],
    ):
        alone = vars(commands.build_parser(commands.verb_of(argv)).parse_args(argv))
        every = vars(full.parse_args(argv))
        # The same function (a verb's closure is made anew with each parser).
        assert alone.pop("fn").__code__ is every.pop("fn").__code__, argv
        assert alone == every, argv
    assert commands.verb_of(["-v", "exec", "x"]) == "exec"
    assert commands.verb_of(["--help"]) is None and commands.verb_of(["nope"]) is None
