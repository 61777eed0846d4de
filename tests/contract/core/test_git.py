"""`sbx.git` on real providers: every verb against a bare repository inside the sandbox (Docker and the
loopback E2B server), and clone/push with a token against a real `git http-backend` on loopback.

Docker sandboxes have no network yet, so the HTTP tests run where the sandbox can reach loopback: the
loopback E2B server runs a sandbox's commands as host processes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_lifecycle.core.git import Author, GitError
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, HOME
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.providers import Harness
from tests.support.git_server import GitHTTPServer

TOKEN = "ghp_test-token-must-stay-out-of-argv-42"
AGENT = Author("Agent Smith", "agent@example.invalid")


@pytest.fixture
def service(harness: Harness, clean_sqlite_url: str) -> SandboxService:
    return SandboxService(open_store(clean_sqlite_url), harness.provider)


def test_every_verb_against_a_bare_repository_in_the_sandbox(service: SandboxService) -> None:
    with service.turn("conv-git", AI_WRITEBACK) as sbx:
        home = sbx.git.at(HOME)
        assert (
            sbx.exec(["git", "init", "--quiet", "--bare", "-b", "main", "remote.git"], cwd=HOME).exit_code
            == 0
        )
        repo = home.clone("remote.git", "work")
        assert repo.cwd == f"{HOME}/work"
        sbx.write_file(f"{HOME}/work/models/orders.sql", "select 1 as id\n")
        assert repo.status() == "?? models/\n"
        repo.add()
        first = repo.commit("Add orders model", author=AGENT)
        assert len(first) == 40
        repo.push("origin", "main")

        repo.branch("agent/revenue-metric")
        assert repo.current_branch() == "agent/revenue-metric"
        sbx.write_file(f"{HOME}/work/models/orders.sql", "select 1 as id, 10 as revenue\n")
        assert "+select 1 as id, 10 as revenue" in repo.diff()
        repo.add(["models/orders.sql"])
        assert "orders.sql" in repo.diff(staged=True, stat=True)
        second = repo.commit("Add revenue", author=AGENT)
        assert repo.push() == "agent/revenue-metric"
        assert "revenue" in repo.diff(first)

        # Switching to an existing branch is not an error; an unusable name is refused before git runs.
        repo.branch("main")
        assert repo.current_branch() == "main"
        with pytest.raises(ValueError, match="not a usable branch name"):
            repo.branch("../escape")

        log = sbx.exec(
            ["git", "--git-dir", "remote.git", "log", "--format=%H %an <%ae> %s", "agent/revenue-metric"],
            cwd=HOME,
        )
        assert log.stdout.splitlines() == [
            f"{second} Agent Smith <agent@example.invalid> Add revenue",
            f"{first} Agent Smith <agent@example.invalid> Add orders model",
        ]
        with pytest.raises(GitError, match="exit code") as failed:
            repo.commit("nothing staged", author=AGENT)
        assert failed.value.exit_code != 0
    assert verify(service.store, service.policy) == []


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    root = tmp_path / "srv"
    seed = tmp_path / "seed"
    root.mkdir()
    run = dict(check=True, capture_output=True, timeout=30)
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(root / "project.git")], **run)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(seed)], **run)
    (seed / "README.md").write_text("# project\n")
    git = ["git", "-C", str(seed), "-c", "user.name=seed", "-c", "user.email=seed@example.invalid"]
    subprocess.run([*git, "add", "README.md"], **run)
    subprocess.run([*git, "commit", "--quiet", "-m", "seed"], **run)
    subprocess.run([*git, "push", "--quiet", str(root / "project.git"), "main"], **run)
    server = GitHTTPServer(root, TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("harness", ["e2b"], indirect=True)
def test_clone_and_push_with_a_token_that_never_leaves_the_environment(
    service: SandboxService,
    git_server: GitHTTPServer,
    fake_e2b: FakeE2B,
    clean_sqlite_url: str,
    tmp_path: Path,
) -> None:
    url = f"{git_server.url}/project.git"
    with service.turn("conv-push", AI_WRITEBACK) as sbx:
        home = sbx.git.at(HOME)
        with pytest.raises(GitError) as refused:
            home.clone(url, "anonymous")
        assert refused.value.exit_code == 128
        with pytest.raises(ValueError, match="carries credentials"):
            home.clone(f"http://user:{TOKEN}@127.0.0.1:1/project.git", "embedded")

        repo = home.clone(url, "project", token=TOKEN)
        sbx.write_file(f"{HOME}/project/metrics.yml", "metrics: [revenue]\n")
        repo.branch("agent/metrics")
        repo.add()
        repo.commit("Add revenue metric", author=AGENT)
        assert repo.push(token=TOKEN) == "agent/metrics"
        # Without the token the server refuses: nothing was stored that a later push could reuse.
        sbx.write_file(f"{HOME}/project/more.yml", "x: 1\n")
        repo.add()
        repo.commit("More", author=AGENT)
        with pytest.raises(GitError) as unauthenticated:
            repo.push()
        assert TOKEN not in str(unauthenticated.value)
        config = sbx.read_file(f"{HOME}/project/.git/config").decode()

    branches = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "srv" / "project.git"), "log", "--format=%s", "agent/metrics"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.splitlines()
    assert branches == ["Add revenue metric", "seed"]
    # Authenticated requests reached the server, with the token only in the Authorization header.
    assert any(auth for _, auth in git_server.requests)
    assert all(TOKEN not in path for path, _ in git_server.requests)
    # The token is in no argument vector the provider was sent, no repository config, no event.
    assert all(TOKEN not in repr(r.body) for r in fake_e2b.requests())
    assert TOKEN not in config and "credential" not in config
    db = Path(clean_sqlite_url.removeprefix("sqlite:///"))
    assert all(TOKEN.encode() not in p.read_bytes() for p in db.parent.glob(db.name + "*"))
