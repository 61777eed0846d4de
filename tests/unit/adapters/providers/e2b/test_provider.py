"""E2BProvider through the real e2b SDK against the loopback fake."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from urllib.parse import parse_qsl

import pytest
from e2b import E2B

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings, idempotency_key
from sandbox_lifecycle.core.errors import (
    ConfigError,
    ExecTimeout,
    ForeignSandbox,
    ProviderError,
    ProviderLost,
)
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME
from sandbox_lifecycle.core.ports import SnapshotInfo
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.e2b import AGENT_SECRET, API_KEY, fake_env

SANDBOX = r"/sandboxes/[^/]+"
PAUSE = SANDBOX + "/pause"
CONNECT = r"/v2/sandboxes/[^/]+/connect"


def test_create_sends_template_metadata_lifecycle_and_egress(
    provider: E2BProvider, fake_e2b: FakeE2B, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    ref = provider.create("sbx-1", DATA_APP)

    [create] = fake_e2b.requests("POST", "/v2/sandboxes")
    body = create.body
    assert body["templateID"] == "lightdash/lightdash-data-app:v1"
    assert body["metadata"] == {
        "sandbox_lifecycle_id": "sbx-1",
        "kind": DATA_APP,
        "managed": "1",
        "deployment": "default",
    }
    assert body["autoPause"] is True and body["autoResume"] == {"enabled": False}
    assert body["timeout"] == 40 * 60
    # Egress only to the allow-list; the sandbox's ports only with its traffic access token.
    assert body["network"] == {
        "allowOut": ["api.anthropic.com"],
        "denyOut": ["0.0.0.0/0"],
        "allowPublicTraffic": False,
    }
    assert create.idempotency_key == idempotency_key("default", "sbx-1")
    assert fake_e2b.sandbox(ref).metadata["sandbox_lifecycle_id"] == "sbx-1"
    # The agent key reaches the sandbox ...
    assert provider.exec(ref, ["printenv", "ANTHROPIC_API_KEY"], timeout=10).stdout == AGENT_SECRET + "\n"
    # ... and nothing else: not the request record, not any log line (the SDK's, the fake's or ours).
    assert body["envVars"] == {"ANTHROPIC_API_KEY": "<redacted>"}
    assert AGENT_SECRET not in repr(fake_e2b.requests())
    assert AGENT_SECRET not in caplog.text and API_KEY not in caplog.text
    assert AGENT_SECRET not in repr(provider._settings) and API_KEY not in repr(provider._settings)


def test_ai_writeback_egress_allows_git_hosts_and_is_configurable(fake_e2b: FakeE2B) -> None:
    default = E2BSettings.from_env(fake_env(fake_e2b))
    assert default.templates[AI_WRITEBACK] == "lightdash/lightdash-ai-writeback:v2"
    assert default.egress_allow[AI_WRITEBACK] == (
        "api.anthropic.com",
        "github.com",
        "gitlab.com",
        "bitbucket.org",
    )

    env = {**fake_env(fake_e2b), "SANDBOX_EGRESS_ALLOW_AI_WRITEBACK": "api.anthropic.com, git.corp.example"}
    E2BProvider(E2BSettings.from_env(env)).create("sbx-w", AI_WRITEBACK)

    [create] = fake_e2b.requests("POST", "/v2/sandboxes")
    assert create.body["templateID"] == "lightdash/lightdash-ai-writeback:v2"
    assert create.body["network"]["allowOut"] == ["api.anthropic.com", "git.corp.example"]
    assert create.body["network"]["denyOut"] == ["0.0.0.0/0"]


def test_settings_from_env_defaults_and_missing_key() -> None:
    with pytest.raises(ConfigError, match="E2B_API_KEY"):
        E2BSettings.from_env({"E2B_TEMPLATE_NAME": "x"})
    with pytest.raises(ConfigError, match="E2B_API_KEY"):
        E2BSettings.from_env({"E2B_API_KEY": "  "})

    settings = E2BSettings.from_env(
        {"E2B_API_KEY": "k", "E2B_TEMPLATE_NAME": "acme/app", "SANDBOX_IDLE_TIMEOUT_MS": "60000"}
    )
    name, tag = settings.templates[DATA_APP].split(":")
    assert name == "acme/app" and tag  # the package version, or "latest" when not installed
    assert settings.templates[AI_WRITEBACK] == f"lightdash/lightdash-ai-writeback:{tag}"
    assert settings.sandbox_timeout == 60 + 600
    assert settings.sandbox_envs == {}
    with pytest.raises(ConfigError, match="E2B_SANDBOX_TIMEOUT_MS"):
        E2BSettings.from_env({"E2B_API_KEY": "k", "E2B_SANDBOX_TIMEOUT_MS": "soon"})


def test_create_is_idempotent_per_sandbox_id(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    first = provider.create("sbx-1", DATA_APP)
    # A second provider (another process, or after a crash) is handed the same sandbox: E2B answers its
    # create by the idempotency key, so it needs no listing first.
    again = E2BProvider(provider._settings).create("sbx-1", DATA_APP)
    other = provider.create("sbx-2", DATA_APP)

    assert again == first != other
    keys = [r.idempotency_key for r in fake_e2b.requests("POST", "/v2/sandboxes")]
    assert keys == [idempotency_key("default", "sbx-1")] * 2 + [idempotency_key("default", "sbx-2")]
    assert len(fake_e2b.sandboxes()) == 2
    assert fake_e2b.requests("GET", "/v2/sandboxes") == []


def test_create_whose_answer_was_lost_is_found_by_the_next_create(
    provider: E2BProvider, fake_e2b: FakeE2B
) -> None:
    # The SDK gives up after twice request_timeout (1 s); E2B makes the sandbox all the same.
    fake_e2b.inject_fault("POST", "/v2/sandboxes", delay=2.5)
    with pytest.raises(ProviderError, match="not retried"):
        provider.create("sbx-1", DATA_APP)
    for _ in range(100):  # until the stalled create has made it (bounded: 5 s)
        if fake_e2b.sandboxes():
            break
        time.sleep(0.05)
    [made] = fake_e2b.sandboxes()

    # After that ambiguous failure the next create looks first, finds it, and makes nothing.
    assert provider.create("sbx-1", DATA_APP) == made.sandbox_id
    assert len(fake_e2b.requests("POST", "/v2/sandboxes")) == 1
    assert len(fake_e2b.requests("GET", "/v2/sandboxes")) == 1
    # What the listing showed is verified: destroying it needs no lookup first.
    provider.destroy("sbx-1", made.sandbox_id)
    assert [r.status for r in fake_e2b.requests("DELETE", SANDBOX)] == [204]
    assert fake_e2b.requests("GET", SANDBOX) == []


def test_create_in_another_deployment_makes_its_own_sandbox(
    provider: E2BProvider, settings: E2BSettings, fake_e2b: FakeE2B
) -> None:
    """Same team, same sandbox id (both stacks derived it from the same create idempotency key): neither
    the metadata lookup nor E2B's idempotency key may hand one deployment the other's sandbox."""
    ours = provider.create("sbx-1", DATA_APP)

    theirs = E2BProvider(settings, deployment="staging").create("sbx-1", DATA_APP)

    assert theirs != ours
    keys = [r.idempotency_key for r in fake_e2b.requests("POST", "/v2/sandboxes")]
    assert keys == [idempotency_key("default", "sbx-1"), idempotency_key("staging", "sbx-1")]
    assert fake_e2b.sandbox(theirs).metadata["deployment"] == "staging"
    found = provider.instance("sbx-1")
    assert found is not None and found.ref == ours


@pytest.mark.parametrize("name", ["", ".", "..", "-x", "a/b", "a b", "x" * 64])
def test_invalid_deployment_names_are_refused(settings: E2BSettings, name: str) -> None:
    with pytest.raises(ValueError, match="SANDBOX_DEPLOYMENT"):
        E2BProvider(settings, deployment=name)


@pytest.mark.parametrize("fault", [{"status": 503}, {"drop": True}])
def test_create_is_never_retried(provider: E2BProvider, fake_e2b: FakeE2B, fault: dict[str, object]) -> None:
    fake_e2b.inject_fault("POST", "/v2/sandboxes", **fault)  # type: ignore[arg-type]

    with pytest.raises(ProviderError, match="not retried") as raised:
        provider.create("sbx-1", DATA_APP)

    assert raised.value.retryable  # the caller may try again: create looks before it makes

    assert len(fake_e2b.requests("POST", "/v2/sandboxes")) == 1
    # The caller's retry looks first, then creates once.
    ref = provider.create("sbx-1", DATA_APP)
    assert [s.sandbox_id for s in fake_e2b.sandboxes()] == [ref]
    assert len(fake_e2b.requests("GET", "/v2/sandboxes")) == 1


def test_exec_returns_stdout_stderr_and_exit_code(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)

    result = provider.exec(ref, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.exit_code, result.stdout, result.stderr, result.truncated) == (3, "out\n", "err\n", False)

    ok = provider.exec(ref, ["sh", "-c", 'pwd; echo "$GREETING"'], timeout=10, env={"GREETING": "hello"})
    cwd, greeting = ok.stdout.splitlines()
    assert ok.exit_code == 0 and greeting == "hello"
    assert cwd.endswith("/home/sandbox/app")  # the kind's workdir is the default cwd

    elsewhere = provider.exec(ref, ["pwd"], timeout=10, cwd="/home/sandbox/repo")
    assert elsewhere.stdout.strip().endswith("/home/sandbox/repo")
    [start, *_] = fake_e2b.requests("POST", "/process.Process/Start")
    assert start.body["process"]["args"] == ["-l", "-c", "sh -c 'echo out; echo err >&2; exit 3'"]
    assert start.user == "sandbox"


def test_exec_output_is_bounded(settings: E2BSettings) -> None:
    provider = E2BProvider(dataclasses.replace(settings, max_output_bytes=100))
    ref = provider.create("sbx-1", DATA_APP)

    result = provider.exec(
        ref, ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo done >&2"], timeout=10
    )

    assert result.exit_code == 0
    assert result.stdout == "a" * 100 and result.stderr == "done\n"
    assert result.truncated


def test_exec_timeout_kills_the_command(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    started = time.monotonic()

    with pytest.raises(ExecTimeout) as raised:
        provider.exec(ref, ["sleep", "30"], timeout=1)

    assert time.monotonic() - started < 10
    assert raised.value.timeout == 1 and raised.value.command == "sleep 30"
    assert fake_e2b.process_count(ref) == 0
    [signal] = fake_e2b.requests("POST", "/process.Process/SendSignal")
    assert signal.body["signal"] == "SIGNAL_SIGKILL"


def test_exec_on_a_sandbox_this_process_never_saw_uses_its_kind(
    settings: E2BSettings, fake_e2b: FakeE2B
) -> None:
    ref = E2BProvider(settings).create("sbx-1", AI_WRITEBACK)

    fresh = E2BProvider(settings)
    assert fresh.exec(ref, ["pwd"], timeout=10).stdout.strip().endswith("/home/sandbox/repo")
    assert [r.body["timeout"] for r in fake_e2b.requests("POST", CONNECT)] == [settings.sandbox_timeout]


def test_using_a_sandbox_extends_its_e2b_timeout(settings: E2BSettings, fake_e2b: FakeE2B) -> None:
    provider = E2BProvider(dataclasses.replace(settings, sandbox_timeout=3))
    ref = provider.create("sbx-1", DATA_APP)
    provider.exec(ref, ["true"], timeout=5)
    assert fake_e2b.requests("POST", SANDBOX + "/timeout") == []

    time.sleep(1.1)  # past a third of the 3 s timeout
    provider.exec(ref, ["true"], timeout=5)

    [extend] = fake_e2b.requests("POST", SANDBOX + "/timeout")
    assert extend.body == {"timeout": 3}


def test_write_and_read_files(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    payload = bytes(range(256)) * 10

    provider.write_file(ref, "/home/sandbox/app/data/blob.bin", payload)

    assert provider.read_file(ref, "/home/sandbox/app/data/blob.bin") == payload
    assert provider.exec(ref, ["wc", "-c", "data/blob.bin"], timeout=10).stdout.split()[0] == "2560"
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        provider.read_file(ref, "/home/sandbox/app/missing.txt")
    assert {r.query["username"][0] for r in fake_e2b.requests(path="/files")} == {"sandbox"}


@pytest.mark.parametrize(("kind", "workdir"), [(DATA_APP, f"{HOME}/app"), (AI_WRITEBACK, f"{HOME}/repo")])
def test_relative_paths_resolve_against_the_kind_workdir(
    provider: E2BProvider, settings: E2BSettings, fake_e2b: FakeE2B, kind: str, workdir: str
) -> None:
    ref = provider.create("sbx-1", kind)

    provider.write_file(ref, "models/../models/orders.sql", b"select 1")

    # envd is only ever given the absolute path; it would resolve a relative one against the home.
    [write] = fake_e2b.requests("POST", "/files")
    assert write.query["path"] == [f"{workdir}/models/orders.sql"]
    assert provider.read_file(ref, f"{workdir}/models/orders.sql") == b"select 1"
    # Another process learns the kind from the sandbox's metadata, and resolves the same way.
    assert E2BProvider(settings).read_file(ref, "models/orders.sql") == b"select 1"
    before = len(fake_e2b.requests(path="/files"))
    for escape in ("../../../etc/passwd", "/etc/passwd", HOME, "/home/sandboxx/f"):
        with pytest.raises(ValueError, match="outside the sandbox home"):
            provider.write_file(ref, escape, b"x")
        with pytest.raises(ValueError, match="outside the sandbox home"):
            provider.read_file(ref, escape)
    assert len(fake_e2b.requests(path="/files")) == before  # refused before reaching the sandbox


def test_read_file_is_bounded(settings: E2BSettings) -> None:
    provider = E2BProvider(dataclasses.replace(settings, max_file_bytes=1000))
    ref = provider.create("sbx-1", DATA_APP)
    provider.write_file(ref, "/home/sandbox/app/big", b"x" * 5000)

    with pytest.raises(ProviderError, match="larger than 1000 bytes"):
        provider.read_file(ref, "/home/sandbox/app/big")


def test_suspend_then_resume_keeps_files(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    provider.write_file(ref, "/home/sandbox/app/main.py", b"print('hi')\n")

    snapshot = provider.suspend("sbx-1", ref, DATA_APP, "ignored-by-e2b")

    assert snapshot == SnapshotInfo(key=ref, sha256=None, bytes=None)
    assert fake_e2b.sandbox(ref).state == "paused"
    assert provider.snapshot_ok(snapshot)
    assert provider.instance("sbx-1") is not None and provider.instance("sbx-1").status == "paused"  # type: ignore[union-attr]

    assert provider.resume("sbx-1", DATA_APP, snapshot) == ref

    [connect] = fake_e2b.requests("POST", CONNECT)
    assert connect.status == 201  # resumed, not merely attached
    assert connect.body == {"timeout": provider._settings.sandbox_timeout}
    assert provider.read_file(ref, "/home/sandbox/app/main.py") == b"print('hi')\n"
    assert provider.exec(ref, ["cat", "main.py"], timeout=10).stdout == "print('hi')\n"
    assert not provider.snapshot_ok(snapshot)  # running again: no longer a snapshot


def test_paused_sandbox_refuses_envd_calls(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    handle = provider._sandboxes.handle(ref).sandbox
    provider.suspend("sbx-1", ref, DATA_APP, "k")

    with pytest.raises(Exception, match="was not found"):
        handle.commands.run("true")


def test_exec_after_e2b_paused_the_sandbox_fails_then_resumes_it(
    provider: E2BProvider, fake_e2b: FakeE2B
) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    provider.write_file(ref, "/home/sandbox/app/f", b"kept")
    fake_e2b.sandbox(ref).state = "paused"  # E2B's own timeout paused it behind our back

    # Whether a command reached the sandbox is not knowable in general, so the failure is the caller's
    # to retry; the retry attaches afresh, which resumes the sandbox.
    with pytest.raises(ProviderError, match="not reachable"):
        provider.exec(ref, ["cat", "f"], timeout=10)
    assert provider.exec(ref, ["cat", "f"], timeout=10).stdout == "kept"

    assert [r.status for r in fake_e2b.requests("POST", CONNECT)] == [201]


def test_double_pause_is_success(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)

    first = provider.suspend("sbx-1", ref, DATA_APP, "k")
    second = provider.suspend("sbx-1", ref, DATA_APP, "k")

    assert first == second
    assert [r.status for r in fake_e2b.requests("POST", PAUSE)] == [204, 409]


def test_pause_5xx_is_retried_until_it_succeeds(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    fake_e2b.inject_fault("POST", PAUSE, status=500, times=2)

    provider.suspend("sbx-1", ref, DATA_APP, "k")

    assert [r.status for r in fake_e2b.requests("POST", PAUSE)] == [500, 500, 204]
    assert fake_e2b.sandbox(ref).state == "paused"


def test_pause_retries_are_bounded(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    fake_e2b.inject_fault("POST", PAUSE, status=500, times=100)

    with pytest.raises(ProviderError, match="500") as raised:
        provider.suspend("sbx-1", ref, DATA_APP, "k")

    assert raised.value.retryable
    assert len(fake_e2b.requests("POST", PAUSE)) == provider._settings.retry_attempts
    assert fake_e2b.sandbox(ref).state == "running"


def test_slow_pause_times_out_and_is_retried(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    # The SDK bounds a request at twice request_timeout (1 s here).
    fake_e2b.inject_fault("POST", PAUSE, delay=2.5)

    provider.suspend("sbx-1", ref, DATA_APP, "k")

    # The first pause was abandoned while it stalled; the retry paused the sandbox.
    _abandoned, retry = fake_e2b.requests("POST", PAUSE)
    assert retry.status == 204
    assert fake_e2b.sandbox(ref).state == "paused"


def test_resume_of_a_lost_sandbox_is_provider_lost(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    snapshot = provider.suspend("sbx-1", ref, DATA_APP, "k")
    fake_e2b.lose(ref)

    with pytest.raises(ProviderLost):
        provider.resume("sbx-1", DATA_APP, snapshot)

    assert [r.status for r in fake_e2b.requests("POST", CONNECT)] == [404]  # a 404 is not retried
    assert not provider.snapshot_ok(snapshot)


def test_dropped_connection_on_a_safe_call_is_retried(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    provider.write_file(ref, "/home/sandbox/app/f", b"kept")
    fake_e2b.inject_fault("GET", "/v2/sandboxes", drop=True)
    fake_e2b.inject_fault("GET", "/files", drop=True)

    assert [i.ref for i in provider.list_instances()] == [ref]
    assert provider.read_file(ref, "/home/sandbox/app/f") == b"kept"

    assert [r.status for r in fake_e2b.requests("GET", "/v2/sandboxes")][-2:] == [-1, 200]
    assert [r.status for r in fake_e2b.requests("GET", "/files")] == [-1, 200]


def test_listing_pages_through_our_sandboxes_only(settings: E2BSettings, fake_e2b: FakeE2B) -> None:
    fake_e2b.max_page_size = 2
    provider = E2BProvider(settings)
    refs = {f"sbx-{i}": provider.create(f"sbx-{i}", DATA_APP if i % 2 else AI_WRITEBACK) for i in range(5)}
    # Someone else's sandbox in the same team is not ours to reconcile, nor another deployment's.
    E2B(api_key=API_KEY, api_url=fake_e2b.url, sandbox_url=fake_e2b.url).Sandbox.create("other:1")
    staging = E2BProvider(settings, deployment="staging")
    staging.suspend("sbx-9", staging.create("sbx-9", DATA_APP), DATA_APP, "k")
    provider.suspend("sbx-1", refs["sbx-1"], DATA_APP, "k")
    provider.suspend("sbx-2", refs["sbx-2"], AI_WRITEBACK, "k")
    listed_before = len(fake_e2b.requests("GET", "/v2/sandboxes"))

    instances = provider.list_instances()

    assert sorted((i.sandbox_id, i.ref, i.kind, i.status) for i in instances) == sorted(
        (
            sid,
            ref,
            DATA_APP if int(sid[-1]) % 2 else AI_WRITEBACK,
            "paused" if sid in ("sbx-1", "sbx-2") else "running",
        )
        for sid, ref in refs.items()
    )
    pages = fake_e2b.requests("GET", "/v2/sandboxes")[listed_before:]
    assert len(pages) == 3  # five sandboxes of ours, two a page
    assert all(
        dict(parse_qsl(p.query["metadata"][0])) == {"managed": "1", "deployment": "default"} for p in pages
    )
    assert sorted(provider.list_snapshots()) == sorted(
        (sid, SnapshotInfo(key=refs[sid], sha256=None, bytes=None)) for sid in ("sbx-1", "sbx-2")
    )


def test_instance_lookup(provider: E2BProvider) -> None:
    ref = provider.create("sbx-1", AI_WRITEBACK)

    found = provider.instance("sbx-1")

    assert found is not None
    assert (found.sandbox_id, found.ref, found.kind, found.status) == ("sbx-1", ref, AI_WRITEBACK, "running")
    assert provider.instance("nope") is None


def test_destroy_is_idempotent(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    other = provider.create("sbx-2", DATA_APP)

    provider.destroy("sbx-1", ref)
    provider.destroy("sbx-1", ref)
    provider.destroy("sbx-2", None)  # no ref recorded (a suspended record): the one this provider made

    # The second destroy of sbx-1 knows it killed it, and sends nothing at all.
    assert [r.status for r in fake_e2b.requests("DELETE", SANDBOX)] == [204, 204]
    assert fake_e2b.requests("GET") == []
    assert fake_e2b.sandboxes() == []
    assert provider.instance("sbx-2") is None and other

    # Another process knows none of that: it finds sbx-1 gone when checking whose it is, finds nothing of
    # sbx-2 by its metadata, and sends no DELETE either.
    fresh = E2BProvider(provider._settings)
    fresh.destroy("sbx-1", ref)
    fresh.destroy("sbx-2", None)
    assert [r.status for r in fake_e2b.requests("GET", SANDBOX)] == [404]
    assert len(fake_e2b.requests("DELETE", SANDBOX)) == 2


def test_delete_snapshot_kills_only_a_paused_sandbox(provider: E2BProvider, fake_e2b: FakeE2B) -> None:
    ref = provider.create("sbx-1", DATA_APP)
    snapshot = provider.suspend("sbx-1", ref, DATA_APP, "k")
    provider.resume("sbx-1", DATA_APP, snapshot)

    provider.delete_snapshot(snapshot)  # the sandbox runs again under the same id: a live workspace
    assert fake_e2b.sandbox(ref).state == "running"

    provider.suspend("sbx-1", ref, DATA_APP, "k")
    provider.delete_snapshot(snapshot)
    provider.delete_snapshot(snapshot)  # already gone is success

    assert fake_e2b.sandboxes() == []
    assert not provider.snapshot_ok(snapshot)


def test_wrong_api_key_is_not_retried_and_names_no_secret(settings: E2BSettings, fake_e2b: FakeE2B) -> None:
    provider = E2BProvider(dataclasses.replace(settings, api_key="wrong-key-123"))

    with pytest.raises(ProviderError) as raised:
        provider.list_instances()

    assert not raised.value.retryable
    assert "wrong-key-123" not in str(raised.value)
    assert len(fake_e2b.requests("GET", "/v2/sandboxes")) == 1


def test_another_deployment_never_resumes_or_kills_our_paused_sandbox(
    settings: E2BSettings, fake_e2b: FakeE2B
) -> None:
    """Connecting resumes a paused E2B sandbox, so the metadata is checked before: a copied database's
    exec, resume or snapshot delete leaves the original's paused sandbox paused, and alive."""
    ours = E2BProvider(settings, deployment="prod")
    copy = E2BProvider(settings, deployment="prod-copy")
    ref = ours.create("sbx-9", DATA_APP)
    snap = ours.suspend("sbx-9", ref, DATA_APP, "unused")
    assert fake_e2b.sandbox(ref).state == "paused"
    connects = len(fake_e2b.requests("POST", CONNECT))

    with pytest.raises(ForeignSandbox, match="deployment 'prod', not 'prod-copy'"):
        copy.exec(ref, ["true"], timeout=10)
    with pytest.raises(ForeignSandbox):
        copy.resume("sbx-9", DATA_APP, snap)
    with pytest.raises(ForeignSandbox):
        copy.delete_snapshot(snap)
    with pytest.raises(ForeignSandbox):
        copy.destroy("sbx-9", ref)
    assert not copy.snapshot_ok(snap)
    assert copy.instance("sbx-9") is None

    assert fake_e2b.sandbox(ref).state == "paused"
    assert len(fake_e2b.requests("POST", CONNECT)) == connects
    assert not fake_e2b.requests("DELETE")
    # Our own deployment still resumes it; and another sandbox id of ours is refused too.
    with pytest.raises(ForeignSandbox, match="sandbox sbx-9's"):
        ours.resume("sbx-other", DATA_APP, snap)
    assert ours.resume("sbx-9", DATA_APP, snap) == ref


ENVD_PATH = re.compile(r"/health|/files|/process\.Process/.*")


@pytest.mark.parametrize("ending", ["destroy-by-ref", "as-the-service-destroys-a-suspended-record"])
def test_a_two_turn_conversation_makes_the_raw_sdks_calls_and_no_more(
    provider: E2BProvider, fake_e2b: FakeE2B, ending: str
) -> None:
    """Every call is a round trip to E2B's cloud. The raw SDK needs: create, pause, connect, pause, kill
    and one process start per exec; so do we (bench/e2b_roundtrips.py measures the time). Ownership is
    still checked on every step, from what the create answered."""
    ref = provider.create("sbx-1", DATA_APP)
    assert provider.exec(ref, ["echo", "one"], timeout=10).stdout == "one\n"
    snapshot = provider.suspend("sbx-1", ref, DATA_APP, "k")
    assert provider.resume("sbx-1", DATA_APP, snapshot) == ref
    assert provider.exec(ref, ["echo", "two"], timeout=10).stdout == "two\n"
    snapshot = provider.suspend("sbx-1", ref, DATA_APP, "k")
    if ending == "destroy-by-ref":
        provider.destroy("sbx-1", ref)
    else:  # a suspended record holds no ref, only its snapshot, deleted after the destroy
        provider.destroy("sbx-1", None)
        provider.delete_snapshot(snapshot)

    made = fake_e2b.requests()
    rest = [(r.method, r.path.replace(ref, "{id}")) for r in made if not ENVD_PATH.fullmatch(r.path)]
    envd = [(r.method, r.path) for r in made if ENVD_PATH.fullmatch(r.path)]
    assert rest == [
        ("POST", "/v2/sandboxes"),
        ("POST", "/sandboxes/{id}/pause"),
        ("POST", "/v2/sandboxes/{id}/connect"),
        ("POST", "/sandboxes/{id}/pause"),
        ("DELETE", "/sandboxes/{id}"),
    ]
    assert envd == [("POST", "/process.Process/Start")] * 2
    assert [r.status for r in made if r.path.endswith("/connect")] == [201]  # resumed
    assert fake_e2b.sandboxes() == []


def test_a_ref_this_process_never_saw_is_looked_up_once_then_known(
    settings: E2BSettings, fake_e2b: FakeE2B
) -> None:
    """After a restart (or on another replica) the first call on a ref checks its metadata; what passed
    is not looked up again, and what did not pass is looked up, and refused, every time."""
    ref = E2BProvider(settings).create("sbx-1", DATA_APP)
    snapshot = E2BProvider(settings).suspend("sbx-1", ref, DATA_APP, "k")  # a lookup: never saw it
    restarted = E2BProvider(settings)

    assert restarted.resume("sbx-1", DATA_APP, snapshot) == ref
    restarted.exec(ref, ["true"], timeout=10)
    restarted.suspend("sbx-1", ref, DATA_APP, "k")
    with pytest.raises(ForeignSandbox, match="sandbox sbx-1's"):
        restarted.resume("sbx-2", DATA_APP, snapshot)  # refused from what the lookup showed
    assert [r.status for r in fake_e2b.requests("GET", SANDBOX)] == [200, 200]  # suspend's, resume's

    other = E2BProvider(settings, deployment="staging")
    for _ in range(2):
        with pytest.raises(ForeignSandbox):
            other.destroy("sbx-1", ref)
    assert len(fake_e2b.requests("GET", SANDBOX)) == 4
    assert not fake_e2b.requests("DELETE") and fake_e2b.sandbox(ref).state == "paused"
