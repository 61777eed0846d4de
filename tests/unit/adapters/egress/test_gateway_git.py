"""Git through the gateway: the sandbox's git talks to the gateway, which adds the granted credential.

A real ``git http-backend`` behind Basic authentication on loopback (tests/support/git_server.py)
stands in for the git host; the sandbox's git is configured only from the environment (``git_env``),
so no file and no argument holds the credential, and the environment holds only the sandbox's token.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.routes import parse_git_route
from sandbox_lifecycle.adapters.gateway.state import GatewayState, git_env
from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from tests.support.fake_e2b import FakeE2B
from tests.support.fake_upstream import REAL_KEY, RunningGateway, running_gateway
from tests.support.fixtures.e2b import fake_env
from tests.support.git_server import GitHTTPServer

GIT_TOKEN = "ghp_granted-to-the-gateway-only-0123456789"
# A git host name that resolves nowhere: only the gateway's grant says where it is.
HOST = "git.sandbox-test.invalid"
RUN = dict(check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    root, seed = tmp_path / "srv", tmp_path / "seed"
    root.mkdir()
    ok = dict(check=True, capture_output=True, timeout=30)
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(root / "project.git")], **ok)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(seed)], **ok)
    (seed / "README.md").write_text("# project\n")
    git = ["git", "-C", str(seed), "-c", "user.name=seed", "-c", "user.email=seed@example.invalid"]
    subprocess.run([*git, "add", "README.md"], **ok)
    subprocess.run([*git, "commit", "--quiet", "-m", "seed"], **ok)
    subprocess.run([*git, "push", "--quiet", str(root / "project.git"), "main"], **ok)
    server = GitHTTPServer(root, GIT_TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def state(tmp_path: Path) -> GatewayState:
    state = GatewayState(tmp_path / "egress")
    state.write_upstream("http://127.0.0.1:9", REAL_KEY)
    return state


@pytest.fixture
def gw(state: GatewayState) -> Iterator[RunningGateway]:
    with running_gateway(state.state_dir) as running:
        yield running


def sandbox_git_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """What a sandbox's git would run with: no credential helper, no prompt, only ``extra``."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        **extra,
    }


def test_clone_and_push_through_the_gateway_with_the_granted_credential(
    tmp_path: Path, state: GatewayState, gw: RunningGateway, git_server: GitHTTPServer
) -> None:
    token = state.issue("sbx1")
    state.grant_git("sbx1", HOST, GIT_TOKEN, url=git_server.url)
    env = sandbox_git_env(tmp_path, git_env(gw.url, token, [HOST]))
    assert GIT_TOKEN not in "".join(env.values())
    work = tmp_path / "work"
    clone = subprocess.run(
        ["git", "clone", "--quiet", f"https://{HOST}/project.git", str(work)], env=env, **RUN
    )
    assert clone.returncode == 0, clone.stderr
    assert (work / "README.md").read_text() == "# project\n"
    # The remote stays the public URL: nothing about the gateway or a credential is in .git/config.
    config = (work / ".git" / "config").read_text()
    assert f"https://{HOST}/project.git" in config and GIT_TOKEN not in config and token not in config
    (work / "NEW.md").write_text("from the sandbox\n")
    git = ["git", "-C", str(work), "-c", "user.name=agent", "-c", "user.email=agent@example.invalid"]
    assert subprocess.run([*git, "add", "NEW.md"], env=env, **RUN).returncode == 0
    assert subprocess.run([*git, "commit", "--quiet", "-m", "agent"], env=env, **RUN).returncode == 0
    push = subprocess.run([*git, "push", "--quiet", "origin", "main"], env=env, **RUN)
    assert push.returncode == 0, push.stderr
    # Every request the git host saw carried the granted credential, added by the gateway.
    expected = "Basic " + base64.b64encode(f"x-access-token:{GIT_TOKEN}".encode()).decode()
    assert git_server.requests and {auth for _path, auth in git_server.requests} == {expected}
    assert any(path.endswith("git-receive-pack") for path, _auth in git_server.requests)
    assert state.counters("sbx1")["requests"] >= 4


def test_without_a_grant_or_with_a_revoked_token_git_is_refused(
    tmp_path: Path, state: GatewayState, gw: RunningGateway, git_server: GitHTTPServer
) -> None:
    token = state.issue("sbx1")
    url = f"https://{HOST}/project.git"
    # A grant of another sandbox is not this one's: its request goes without a credential (and fails).
    state.issue("sbx2")
    state.grant_git("sbx2", HOST, GIT_TOKEN, url=git_server.url)
    env = sandbox_git_env(tmp_path, git_env(gw.url, token, [HOST]))
    no_grant = subprocess.run(["git", "ls-remote", url], env=env, **RUN)
    assert no_grant.returncode != 0
    state.grant_git("sbx1", HOST, GIT_TOKEN, url=git_server.url)
    assert subprocess.run(["git", "ls-remote", url], env=env, **RUN).returncode == 0
    state.revoke("sbx1")  # suspend: the token and the grant go
    assert state.git_hosts("sbx1") == []
    reached = len(git_server.requests)
    revoked = subprocess.run(["git", "ls-remote", url], env=env, **RUN)
    # Refused by the gateway (a 401, which git reports as wanting a user name): the host saw nothing.
    assert revoked.returncode != 0 and len(git_server.requests) == reached


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", f"/git/{HOST}/project.git/info/refs"),  # no service
        ("GET", f"/git/{HOST}/project.git/info/refs?service=other"),
        ("GET", f"/git/{HOST}/project.git/objects/info/packs"),  # the dumb protocol
        ("POST", f"/git/{HOST}/project.git/info/refs?service=git-upload-pack"),
        ("GET", f"/git/{HOST}/project.git/git-upload-pack"),
        ("POST", f"/git/{HOST}/a/../project.git/git-upload-pack"),
        ("POST", "/git/-bad-host/project.git/git-upload-pack"),
        ("POST", f"/git/{HOST}"),
    ],
)
def test_only_smart_http_git_requests_are_routed(method: str, target: str) -> None:
    assert parse_git_route(method, target) is None


def test_smart_http_requests_are_routed_to_their_host() -> None:
    assert parse_git_route("GET", f"/git/{HOST}/o/p.git/info/refs?service=git-receive-pack") == (
        HOST,
        "/o/p.git/info/refs?service=git-receive-pack",
    )
    assert parse_git_route("POST", "/git/h.example:8443/p/git-upload-pack") == (
        "h.example:8443",
        "/p/git-upload-pack",
    )


def test_an_e2b_sandbox_clones_through_the_gateway_holding_no_git_credential(
    tmp_path: Path, state: GatewayState, gw: RunningGateway, git_server: GitHTTPServer
) -> None:
    fake = FakeE2B("e2b_test_key_0123456789", tmp_path / "e2b")
    fake.start()
    try:
        env = {
            **fake_env(fake),
            "SANDBOX_GATEWAY_PUBLIC_URL": gw.url,
            "SANDBOX_EGRESS_STATE_DIR": str(state.state_dir),
        }
        provider = E2BProvider(E2BSettings.from_env(env))
        ref = provider.create("sbx1", "ai-writeback")
        state.grant_git("sbx1", HOST, GIT_TOKEN, url=git_server.url)
        done = provider.exec(
            ref,
            ["git", "clone", "--quiet", f"https://{HOST}/project.git", "checkout"],
            timeout=60,
            env={"GIT_TERMINAL_PROMPT": "0"},
        )
        assert done.exit_code == 0, done.stderr
        shown = provider.exec(ref, ["sh", "-c", "cat checkout/README.md; env"], timeout=30).stdout
        assert shown.startswith("# project") and GIT_TOKEN not in shown
        provider.destroy("sbx1", ref)
        assert state.git_hosts("sbx1") == []
    finally:
        fake.stop()


@pytest.mark.parametrize(
    "host", ["GitHub.com", "github.com:443", "github.com/x", "a b", "../x", "github.com."]
)
def test_a_grant_names_a_host_as_the_gateway_routes_it(state: GatewayState, host: str) -> None:
    with pytest.raises(ValueError):
        state.grant_git("sbx1", host, GIT_TOKEN)
    state.grant_git("sbx1", "git.example.test:8443", GIT_TOKEN)
    assert state.git_hosts("sbx1") == ["git.example.test:8443"]


def test_a_docker_sandboxs_git_goes_where_its_policy_says_and_to_the_checked_address(
    tmp_path: Path, state: GatewayState, gw: RunningGateway, git_server: GitHTTPServer
) -> None:
    """The loopback stands in for the sandbox's network; its policy lists the git host by name and pins it
    (as SANDBOX_EGRESS_RESOLVE does), so the gateway connects to the pinned address, never by the name."""
    from sandbox_lifecycle.adapters.egress.policy import policy_document, write_policy

    named = f"git.pinned.test:{git_server.port}"
    write_policy(
        str(state.state_dir),
        policy_document(
            "sbx1",
            "ai-writeback",
            "127.0.0.0/8",
            [named],
            [f"{named}:127.0.0.1"],
            "SANDBOX_EGRESS_ALLOW_AI_WRITEBACK",
        ),
    )
    token = state.issue("sbx1")
    state.grant_git("sbx1", HOST, GIT_TOKEN, url=f"http://{named}")
    env = sandbox_git_env(tmp_path, git_env(gw.url, token, [HOST]))
    listed = subprocess.run(["git", "ls-remote", f"https://{HOST}/project.git"], env=env, **RUN)
    assert listed.returncode == 0, listed.stderr
    assert "refs/heads/main" in listed.stdout
    # The same credential at a raw address is refused by the policy, before any connection.
    reached = len(git_server.requests)
    state.grant_git("sbx1", HOST, GIT_TOKEN, url=git_server.url)
    refused = subprocess.run(["git", "ls-remote", f"https://{HOST}/project.git"], env=env, **RUN)
    assert refused.returncode != 0 and "403" in refused.stderr
    assert len(git_server.requests) == reached
