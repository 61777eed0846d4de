"""Credentials at the egress point on real Docker, seen from inside a real sandbox, through the service.

A TLS origin of this test (a throw-away CA the egress point is told to trust with
SANDBOX_EGRESS_UPSTREAM_CA) listens on the engine's default bridge address under a name pinned with
SANDBOX_EGRESS_RESOLVE, and records the headers it received. The sandbox asks for ``http://`` through its
proxy; the request arrives over TLS with the credential. The sandbox cannot find the value: not in its
environment, its files, any process's /proc, the origin's echo of its own request, nor a tunnel; another
allow-listed host never gets it; and it is in no container's configuration.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
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
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, RUN_PREFIX, TEST_LIMITS, remove_network_leftovers
from tests.support.recording_origin import Origin, recording_origin
from tests.support.tls_ca import ThrowawayCA, make_ca

pytestmark = pytest.mark.docker

HOST = "api.cred.test"
OTHER = "other.test"
SECRET = "PLANTED-egress-credential-5d1c7e0a9b3f4e2d"
DEPLOYMENT = f"{RUN_PREFIX}-crd"
POLICY = Policy(idle_timeout=timedelta(hours=1), retention=timedelta(days=1), lease=timedelta(minutes=5))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_ca(tmp_path_factory.mktemp("ca"), [HOST, OTHER])


@pytest.fixture
def origins(docker_client: docker.DockerClient, ca: ThrowawayCA) -> Iterator[tuple[Origin, Origin]]:
    address = bridge_host_address(docker_client.api.inspect_network("bridge"))
    # The other host is plain HTTP: the sandbox's own request reaches it as sent, so what it got is seen.
    with recording_origin(address, ca) as tls, recording_origin(address) as other:
        yield tls, other


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
    origins: tuple[Origin, Origin],
    ca: ThrowawayCA,
    clean_sqlite_url: str,
) -> Iterator[SandboxService]:
    tls, other = origins
    address = bridge_host_address(docker_client.api.inspect_network("bridge"))
    allow = (f"{HOST}:{tls.port}", f"{OTHER}:{other.port}")
    egress = EgressSettings(
        allow={"data-app": allow, "ai-writeback": allow},
        resolve=(f"{HOST}:{tls.port}:{address}", f"{OTHER}:{other.port}:{address}"),
        state_dir=tmp_path / "egress-state",
        upstream_ca=ca.ca,
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


# Inside the sandbox: asks the URL through the proxy (HTTP_PROXY), prints status and body.
ASK = textwrap.dedent(
    """
    import sys, urllib.request, urllib.error
    request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer guessed"})
    try:
        answer = urllib.request.urlopen(request, timeout=20)
        print(answer.status); print(answer.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code); print(e.read().decode())
    """
)

# Inside the sandbox: everything it could read, printed (its environment, every process's environment and
# command line it may read, its files but for /proc and /sys).
LOOK = textwrap.dedent(
    """
    import os, glob, sys
    needle = bytes.fromhex(sys.argv[1])  # hex on the command line, so this process's own is no match
    print("\\n".join(f"{k}={v}" for k, v in os.environ.items()))
    for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
        try:
            print(open(path, "rb").read().replace(b"\\0", b"\\n").decode("latin-1"))
        except OSError:
            pass
    for top in ("/etc", "/home", "/tmp", "/root", "/opt", "/var", "/run", "/workspace", "/srv", "/mnt"):
        for root, dirs, files in os.walk(top):
            for name in files:
                try:
                    with open(os.path.join(root, name), "rb") as f:
                        if needle in f.read(4_000_000):
                            print("HOLDS" + "-SECRET", os.path.join(root, name))
                except OSError:
                    pass
    """
)


def _ask(service: SandboxService, sid: str, url: str) -> tuple[int, str]:
    done = service.exec(sid, ["python3", "-c", ASK, url], timeout=60)
    assert done.exit_code == 0, done.stderr
    status, _, body = done.stdout.partition("\n")
    return int(status), body


def test_the_request_arrives_with_the_credential_and_the_sandbox_never_holds_it(
    service: SandboxService, origins: tuple[Origin, Origin], docker_client: docker.DockerClient
) -> None:
    tls, other = origins
    sid = service.create("data-app").id
    service.set_credentials(
        sid, f"{HOST}:{tls.port}", {"Authorization": f"Bearer {SECRET}"}, reason="use the API", actor="test"
    )
    status, body = _ask(service, sid, f"http://{HOST}:{tls.port}/echo")
    assert status == 200, body
    # The origin got ours (over TLS), not the sandbox's guess; the sandbox read stars in the echo.
    assert tls.headers("authorization") == [f"Bearer {SECRET}"]
    assert SECRET not in body and "Authorization: ****" in body
    # Another allow-listed host: its own request, nothing added.
    assert _ask(service, sid, f"http://{OTHER}:{other.port}/echo")[0] == 200
    assert other.headers("authorization") == ["Bearer guessed"]
    assert SECRET not in json.dumps(other.seen)

    looked = service.exec(sid, ["python3", "-c", LOOK, SECRET.encode().hex()], timeout=120)
    assert looked.exit_code == 0, looked.stderr
    assert "HOLDS-SECRET" not in looked.stdout and SECRET not in looked.stdout, looked.stdout[-2000:]
    assert "HTTP_PROXY=http://egress:3128" in looked.stdout  # it did read its environment
    for container in docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_DEPLOYMENT}={DEPLOYMENT}"}
    ):
        assert SECRET not in json.dumps(container.attrs), container.name
        assert SECRET not in container.logs().decode("latin-1"), container.name
    uses = [
        (h.data["host"], h.data["headers"], h.actor)
        for h in service.history(sid)
        if h.type == "CredentialsSet"
    ]
    assert uses == [(f"{HOST}:{tls.port}", ["Authorization"], "test")]
    assert SECRET not in json.dumps([e.data for e in service.events(sandbox_id=sid)], default=str)


def test_credentials_outlive_a_suspend_and_go_with_the_destroy(
    service: SandboxService, origins: tuple[Origin, Origin], tmp_path: Path
) -> None:
    tls, _ = origins
    sid = service.create("data-app").id
    service.set_credentials(sid, f"{HOST}:{tls.port}", {"X-Key": SECRET})
    service.suspend(sid)
    service.resume(sid)
    assert _ask(service, sid, f"http://{HOST}:{tls.port}/")[0] == 200
    assert tls.headers("x-key") == [SECRET]
    service.destroy(sid)
    assert not (tmp_path / "egress-state" / "credentials" / f"{sid}.json").exists()
