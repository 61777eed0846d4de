"""The writeback job's clone and push on real Docker: the token goes to the egress point, never the sandbox.

A real ``git http-backend`` server behind TLS (a throw-away CA the egress point trusts) on the engine's
default bridge address, under a name pinned with SANDBOX_EGRESS_RESOLVE and allowed for ai-writeback.
The job's ``writeback_turn`` clones and pushes with ``token=``; the server sees the token as the Basic
password; the sandbox's environment, files and processes, every container's configuration and logs, and
the event log hold it nowhere; the log records the two uses per git command (set, then removed).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.git import Author
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, HOME
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.conftest import DOCKER_IMAGES
from tests.integration.adapters.providers.docker.test_egress_credentials import LOOK
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, RUN_PREFIX, TEST_LIMITS, remove_network_leftovers
from tests.support.git_server import GitHTTPServer
from tests.support.tls_ca import make_ca

pytestmark = pytest.mark.docker

GIT_HOST = "git.cred.test"
TOKEN = "ghp_PLANTED" + "b8e2c4a6d0f1e3a5c7b9d1f3"
DEPLOYMENT = f"{RUN_PREFIX}-gpe"
POLICY = Policy(idle_timeout=timedelta(hours=1), retention=timedelta(days=1), lease=timedelta(minutes=5))
AGENT = Author("Agent Smith", "agent@example.invalid")


class TLSGitServer(GitHTTPServer):
    """The test's git server behind TLS, on ``host``, with a certificate of a throw-away CA in ``ca_dir``."""

    def __init__(self, root: Path, token: str, host: str, ca_dir: Path) -> None:
        super(GitHTTPServer, self).__init__(root, token, host=host)
        self.requests = []
        self.ca = make_ca(ca_dir, [GIT_HOST])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca.cert, self.ca.key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)


def seeded(tmp_path: Path) -> Path:
    """A folder of bare repositories holding ``project.git`` (one commit on main, pushes accepted)."""
    root = tmp_path / "srv"
    seed = tmp_path / "seed"
    root.mkdir()
    run = dict(check=True, capture_output=True, timeout=30)
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(root / "project.git")], **run)
    subprocess.run(["git", "-C", str(root / "project.git"), "config", "http.receivepack", "true"], **run)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(seed)], **run)
    (seed / "README.md").write_text("# project\n")
    git = ["git", "-C", str(seed), "-c", "user.name=seed", "-c", "user.email=seed@example.invalid"]
    subprocess.run([*git, "add", "README.md"], **run)
    subprocess.run([*git, "commit", "--quiet", "-m", "seed"], **run)
    subprocess.run([*git, "push", "--quiet", str(root / "project.git"), "main"], **run)
    return root


@pytest.fixture
def git_server(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[TLSGitServer]:
    address = bridge_host_address(docker_client.api.inspect_network("bridge"))
    server = TLSGitServer(seeded(tmp_path), TOKEN, address, tmp_path / "ca")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_provider(
    docker_client: docker.DockerClient, tmp_path: Path
) -> Callable[[EgressSettings], DockerProvider]:
    """The provider under test, with these egress settings (the gvisor folder's module overrides it)."""
    return lambda egress: DockerProvider(
        DOCKER_IMAGES,
        LocalSnapshotStore(tmp_path / "snapshots"),
        client=docker_client,
        environ={},
        limits=TEST_LIMITS,
        deployment=DEPLOYMENT,
        disk_limit_mb=0,
        egress=egress,
    )


@pytest.fixture
def service(
    make_provider: Callable[[EgressSettings], DockerProvider],
    docker_client: docker.DockerClient,
    tmp_path: Path,
    git_server: TLSGitServer,
    clean_sqlite_url: str,
) -> Iterator[SandboxService]:
    address = bridge_host_address(docker_client.api.inspect_network("bridge"))
    egress = EgressSettings(
        allow={"data-app": (), AI_WRITEBACK: (f"{GIT_HOST}:{git_server.port}",)},
        resolve=(f"{GIT_HOST}:{git_server.port}:{address}",),
        state_dir=tmp_path / "egress-state",
        upstream_ca=git_server.ca.ca,
    )
    provider = make_provider(egress)
    store = open_store(clean_sqlite_url)
    try:
        yield SandboxService(store, provider, policy=POLICY)
    finally:
        store.close()
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_DEPLOYMENT}={DEPLOYMENT}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        remove_network_leftovers(docker_client, f"{LABEL_DEPLOYMENT}={DEPLOYMENT}")


def test_clone_and_push_with_a_token_the_sandbox_never_sees(
    service: SandboxService,
    git_server: TLSGitServer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    clean_sqlite_url: str,
) -> None:
    url = f"https://{GIT_HOST}:{git_server.port}/project.git"
    with service.turn("conv-push", AI_WRITEBACK) as sbx:
        repo = sbx.git.at(HOME).clone(url, "project", token=TOKEN)
        sbx.write_file(f"{HOME}/project/metrics.yml", "metrics: [revenue]\n")
        repo.branch("agent/metrics")
        repo.add()
        repo.commit("Add revenue metric", author=AGENT)
        assert repo.push(token=TOKEN) == "agent/metrics"
        config = sbx.read_file(f"{HOME}/project/.git/config").decode()
        looked = sbx.exec(["python3", "-c", LOOK, TOKEN.encode().hex()], timeout=120)
        sid = sbx.id
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_DEPLOYMENT}={DEPLOYMENT}"}
        ):
            assert TOKEN not in json.dumps(container.attrs), container.name
            assert TOKEN not in container.logs().decode("latin-1"), container.name
    branches = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "srv" / "project.git"), "log", "--format=%s", "agent/metrics"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.splitlines()
    assert branches == ["Add revenue metric", "seed"]
    # Every request reached the server authenticated, over TLS, from the egress point.
    assert git_server.requests and all(auth for _, auth in git_server.requests)
    assert looked.exit_code == 0 and "HOLDS-SECRET" not in looked.stdout and TOKEN not in looked.stdout
    assert TOKEN not in config and url in config
    uses = [
        (h.data["host"], h.data["headers"], h.reason)
        for h in service.history(sid)
        if h.type == "CredentialsSet"
    ]
    # Kept under the repository's path: the token serves git's requests for it only.
    host = f"{GIT_HOST}:{git_server.port}/project.git/"
    assert uses == [
        (host, ["Authorization"], "git clone"),
        (host, [], "git clone done"),
        (host, ["Authorization"], "git push"),
        (host, [], "git push done"),
    ]
    db = Path(clean_sqlite_url.removeprefix("sqlite:///"))
    assert all(TOKEN.encode() not in p.read_bytes() for p in db.parent.glob(db.name + "*"))
