"""DockerProvider against the real engine and the locally built sandbox images."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import (
    LABEL_DEPLOYMENT,
    LABEL_DISK,
    LABEL_ID,
    LABEL_KIND,
    LABEL_MANAGED,
    DockerProvider,
)
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core.errors import (
    ExecTimeout,
    ForeignSandbox,
    ProviderError,
    ProviderLost,
    ProviderRefused,
    SnapshotCorrupt,
    SnapshotNotFound,
)
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME
from sandbox_lifecycle.core.ports import SnapshotInfo
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import DEPLOYMENT, TEST_LIMITS

pytestmark = pytest.mark.docker

NewId = Callable[[], str]


def sh(provider: DockerProvider, ref: str, script: str, timeout: float = 30) -> str:
    result = provider.exec(ref, ["bash", "-c", script], timeout=timeout)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def containers_of(client: docker.DockerClient, sandbox_id: str) -> list[str]:
    return [
        c.id or "" for c in client.containers.list(all=True, filters={"label": f"{LABEL_ID}={sandbox_id}"})
    ]


# ---------------------------------------------------------------------------------- construction


def test_refuses_production(store: LocalSnapshotStore) -> None:
    with pytest.raises(ProviderRefused, match="SANDBOX_PROVIDER=e2b") as caught:
        DockerProvider(DOCKER_IMAGES, store, environ={"NODE_ENV": "production"})
    assert "root-equivalent" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize("name", ["", ".", "..", "-x", "a/b", "a b", "x" * 64])
def test_refuses_an_invalid_deployment_name(store: LocalSnapshotStore, name: str) -> None:
    with pytest.raises(ValueError, match="SANDBOX_DEPLOYMENT"):
        DockerProvider(DOCKER_IMAGES, store, environ={}, deployment=name)


def test_missing_image_names_the_build_script(
    docker_client: docker.DockerClient, store: LocalSnapshotStore, new_id: NewId, tmp_path: Path
) -> None:
    provider = DockerProvider(
        {DATA_APP: "sandbox-lifecycle-no-such-image:never"},
        store,
        client=docker_client,
        environ={},
        egress=EgressSettings(state_dir=tmp_path / "egress"),
    )
    sandbox_id = new_id()
    with pytest.raises(ProviderError, match=r"sandboxes/data-apps/build-local-image\.sh") as caught:
        provider.create(sandbox_id, DATA_APP)
    assert not caught.value.retryable
    assert containers_of(docker_client, sandbox_id) == []


# ---------------------------------------------------------------------------------- create


def test_create_is_hardened(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)

    attrs = docker_client.api.inspect_container(ref)
    host = attrs["HostConfig"]
    assert attrs["Name"] == f"/sbx-{sandbox_id}"
    labels = {LABEL_ID: sandbox_id, LABEL_KIND: DATA_APP, LABEL_MANAGED: "1", LABEL_DEPLOYMENT: DEPLOYMENT}
    # Plus the host file holding the home filesystem (its size is the disk limit).
    disk = attrs["Config"]["Labels"][LABEL_DISK]
    assert attrs["Config"]["Labels"] == {**labels, LABEL_DISK: disk}
    [volume] = docker_client.volumes.list(filters={"label": f"{LABEL_ID}={sandbox_id}"})
    assert volume.attrs["Labels"] == {**labels, LABEL_DISK: disk}
    assert volume.attrs["Driver"] == "local" and volume.attrs["Options"]["type"] == "ext4"
    assert attrs["Config"]["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert not host["Privileged"]
    assert host["PidsLimit"] == TEST_LIMITS.pids
    assert host["Memory"] == TEST_LIMITS.memory_bytes
    assert host["NanoCpus"] == TEST_LIMITS.nano_cpus
    # Its own network, internal, where the host has no address (docs/network.md; tests/**/test_egress.py).
    assert host["NetworkMode"] == f"sbx-net-{sandbox_id}"
    network = docker_client.api.inspect_network(host["NetworkMode"])
    assert network["Internal"] and network["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"
    assert host["ReadonlyRootfs"] is True
    assert host["Init"] is True
    assert not host["Binds"]
    # The only mount is the anonymous home volume: nothing of the host, no Docker socket.
    assert [(m["Type"], m["Destination"]) for m in attrs["Mounts"]] == [("volume", HOME)]

    # And the sandbox sees it that way.
    assert sh(provider, ref, "id -u; id -g").split() == ["1000", "1000"]
    # One interface besides loopback: its own network's.
    assert sh(provider, ref, "ls /sys/class/net").split() == ["eth0", "lo"]
    assert sh(provider, ref, "grep CapEff /proc/self/status").split()[1] == "0000000000000000"
    denied = provider.exec(ref, ["touch", "/usr/local/x"], timeout=10)
    assert denied.exit_code != 0 and "Read-only file system" in denied.stderr
    assert sh(provider, ref, "touch ~/x /tmp/x && echo ok").strip() == "ok"


def test_create_is_idempotent(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    assert provider.create(sandbox_id, DATA_APP) == ref

    # A stopped container (e.g. after an engine restart) is started again, not replaced.
    docker_client.api.stop(ref, timeout=1)
    assert provider.create(sandbox_id, DATA_APP) == ref
    assert docker_client.api.inspect_container(ref)["State"]["Running"] is True
    assert containers_of(docker_client, sandbox_id) == [ref]

    with pytest.raises(ProviderRefused, match="not 'ai-writeback'"):
        provider.create(sandbox_id, AI_WRITEBACK)


def test_concurrent_creates_share_one_container(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    with ThreadPoolExecutor(max_workers=3) as pool:
        refs = set(pool.map(lambda _: provider.create(sandbox_id, DATA_APP), range(3)))
    assert len(refs) == 1
    assert containers_of(docker_client, sandbox_id) == list(refs)


def test_create_refuses_a_foreign_container_with_our_name(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    foreign = docker_client.containers.create(
        DOCKER_IMAGES[DATA_APP], name=f"sbx-{sandbox_id}", labels={LABEL_ID: sandbox_id}
    )
    with pytest.raises(ProviderRefused, match="does not manage"):
        provider.create(sandbox_id, DATA_APP)
    assert containers_of(docker_client, sandbox_id) == [foreign.id]


def test_images_hold_each_kinds_tools(provider: DockerProvider, new_id: NewId) -> None:
    app = provider.create(new_id(), DATA_APP)
    assert sh(provider, app, "pwd").strip() == f"{HOME}/app"
    assert "git version" in sh(provider, app, "git --version")
    assert sh(provider, app, "node --version").startswith("v")

    writeback = provider.create(new_id(), AI_WRITEBACK)
    assert sh(provider, writeback, "pwd").strip() == f"{HOME}/repo"
    assert sh(provider, writeback, "python3 --version").startswith("Python 3")
    assert sh(provider, writeback, "node --version").startswith("v")
    assert sh(provider, writeback, "test -d ~/.claude && git --version").startswith("git version")


# ---------------------------------------------------------------------------------- exec


def test_exec_output_exit_code_env_and_cwd(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)

    result = provider.exec(ref, ["bash", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.exit_code, result.stdout, result.stderr, result.truncated) == (3, "out\n", "err\n", False)

    result = provider.exec(ref, ["printenv", "GREETING", "HOME"], timeout=10, env={"GREETING": "hi there"})
    assert result.stdout == f"hi there\n{HOME}\n"

    assert provider.exec(ref, ["pwd"], timeout=10).stdout == f"{HOME}/app\n"
    assert provider.exec(ref, ["pwd"], timeout=10, cwd="/tmp").stdout == "/tmp\n"

    missing = provider.exec(ref, ["no-such-command-here"], timeout=10)
    assert missing.exit_code == 127
    # A command is never taken for an option of the timeout wrapper.
    assert provider.exec(ref, ["--version"], timeout=10).exit_code == 127


def test_exec_timeout_kills_the_command_and_its_children(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    # One sleep in the command's process group, one that left it with setsid: both must die.
    started = time.monotonic()
    with pytest.raises(ExecTimeout, match="timed out after 1s"):
        provider.exec(ref, ["bash", "-c", "setsid sleep 301 & sleep 300"], timeout=1)
    assert time.monotonic() - started < 10

    deadline = time.monotonic() + 5  # killed processes are reaped by the container's init
    while (left := provider.exec(ref, ["pgrep", "-af", "^sleep 30[01]$"], timeout=10)).exit_code == 0:
        assert time.monotonic() < deadline, f"still running after the timeout: {left.stdout}"
        time.sleep(0.1)
    assert left.exit_code == 1  # pgrep: no process matched

    # The sandbox is still usable afterwards.
    assert provider.exec(ref, ["true"], timeout=10).exit_code == 0


def test_exec_of_a_silent_command_within_its_timeout(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    result = provider.exec(ref, ["sleep", "1"], timeout=10)
    assert result.exit_code == 0 and result.stdout == ""


def test_exec_output_is_bounded(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    limit = TEST_LIMITS.max_output_bytes
    result = provider.exec(
        ref, ["bash", "-c", "head -c 5000000 /dev/zero | tr '\\0' a; echo done >&2"], timeout=60
    )
    assert result.exit_code == 0
    assert result.truncated is True
    assert result.stdout == "a" * limit
    assert result.stderr == "done\n"


def test_exec_on_a_removed_container_is_lost(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    ref = provider.create(new_id(), DATA_APP)
    docker_client.api.remove_container(ref, force=True, v=True)
    with pytest.raises(ProviderLost):
        provider.exec(ref, ["true"], timeout=10)


# ---------------------------------------------------------------------------------- files


def test_write_and_read_files(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)

    provider.write_file(ref, "src/deep/er/index.js", b"console.log(1)\n")  # relative to ~/app
    assert provider.read_file(ref, f"{HOME}/app/src/deep/er/index.js") == b"console.log(1)\n"
    # New directories and the file belong to the sandbox user, who can change them.
    owners = sh(provider, ref, "stat -c '%u:%g %a' src src/deep/er src/deep/er/index.js").split("\n")
    assert owners[:3] == ["1000:1000 755", "1000:1000 755", "1000:1000 644"]
    sh(provider, ref, "echo more >> src/deep/er/index.js")

    provider.write_file(ref, f"{HOME}/.claude/settings.json", b"{}")
    assert sh(provider, ref, "cat ~/.claude/settings.json") == "{}"
    provider.write_file(ref, "src/deep/er/index.js", b"replaced")
    assert provider.read_file(ref, "src/deep/er/index.js") == b"replaced"

    binary = bytes(range(256)) * 100
    provider.write_file(ref, "blob.bin", binary)
    assert provider.read_file(ref, "blob.bin") == binary


def test_file_paths_must_stay_in_home(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    for path in ("../../../etc/passwd", "/etc/passwd", "/home/sandboxer/x", "..", "/tmp/x"):
        with pytest.raises(ValueError, match="outside the sandbox home"):
            provider.write_file(ref, path, b"x")
        with pytest.raises(ValueError, match="outside the sandbox home"):
            provider.read_file(ref, path)


def test_read_file_errors(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    with pytest.raises(FileNotFoundError):
        provider.read_file(ref, "nope.txt")
    with pytest.raises(ProviderError, match="not a regular file"):
        provider.read_file(ref, HOME + "/.claude")
    sh(provider, ref, f"head -c {TEST_LIMITS.max_read_bytes + 1} /dev/zero > big")
    with pytest.raises(ProviderError, match="read_file returns at most"):
        provider.read_file(ref, "big")


# ---------------------------------------------------------------------------------- suspend / resume


def test_suspend_then_resume_keeps_the_workspace(
    provider: DockerProvider, store: LocalSnapshotStore, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    provider.write_file(ref, "index.js", b"app source")
    provider.write_file(ref, f"{HOME}/.claude/session.json", b'{"turns": 3}')
    sh(provider, ref, "mkdir -p node_modules/left-pad && echo dep > node_modules/left-pad/index.js")
    sh(
        provider,
        ref,
        "git init -q . && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m first",
    )
    provider.write_file(ref, f"{HOME}/outside-include.txt", b"not part of the workspace")

    key = f"snapshots/{sandbox_id}/2.tar.zst"
    info = provider.suspend(sandbox_id, ref, DATA_APP, key)
    assert info.key == key and info.sha256 and info.bytes == store.stat(f"{DEPLOYMENT}/{key}")
    assert provider.snapshot_ok(info)
    assert provider.instance(sandbox_id) is None
    assert containers_of(docker_client, sandbox_id) == []
    assert (sandbox_id, SnapshotInfo(key, None, None)) in provider.list_snapshots()

    new_ref = provider.resume(sandbox_id, DATA_APP, info)
    assert new_ref != ref
    assert provider.read_file(new_ref, "index.js") == b"app source"
    assert provider.read_file(new_ref, f"{HOME}/.claude/session.json") == b'{"turns": 3}'
    assert sh(provider, new_ref, "git log --format=%s") == "first\n"
    assert sh(provider, new_ref, "stat -c %u index.js ~/.claude/session.json") == "1000\n1000\n"
    gone = provider.exec(new_ref, ["ls", "node_modules", f"{HOME}/outside-include.txt"], timeout=10)
    assert gone.exit_code != 0 and gone.stdout == ""
    # Writable again, as the sandbox user.
    sh(provider, new_ref, "echo edit >> index.js")
    assert containers_of(docker_client, sandbox_id) == [new_ref]


def test_suspend_retried_after_it_completed_returns_the_stored_snapshot(
    provider: DockerProvider, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    provider.write_file(ref, "index.js", b"kept")
    key = f"snapshots/{sandbox_id}/1.tar.zst"
    info = provider.suspend(sandbox_id, ref, DATA_APP, key)

    # The process died before recording the outcome; the retry finds the container gone.
    # What the first try uploaded is not known to the retry.
    assert provider.suspend(sandbox_id, ref, DATA_APP, key) == replace(info, bytes_new=None)
    # Without a stored snapshot a vanished container is lost.
    with pytest.raises(ProviderLost):
        provider.suspend(sandbox_id, ref, DATA_APP, f"snapshots/{sandbox_id}/2.tar.zst")


def test_failed_store_keeps_the_container(
    provider: DockerProvider, store: LocalSnapshotStore, new_id: NewId, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    provider.write_file(ref, "index.js", b"precious")

    def broken_put(key: str, stream: object) -> SnapshotInfo:
        raise ProviderError("store unavailable")

    monkeypatch.setattr(store, "put", broken_put)
    with pytest.raises(ProviderError, match="store unavailable"):
        provider.suspend(sandbox_id, ref, DATA_APP, f"snapshots/{sandbox_id}/1.tar.zst")
    instance = provider.instance(sandbox_id)
    assert instance is not None and instance.ref == ref and instance.status == "running"
    assert provider.read_file(ref, "index.js") == b"precious"


def test_resume_of_a_corrupt_snapshot_creates_nothing(
    provider: DockerProvider, store: LocalSnapshotStore, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, AI_WRITEBACK)
    provider.write_file(ref, "models/orders.sql", b"select 1")
    info = provider.suspend(sandbox_id, ref, AI_WRITEBACK, f"snapshots/{sandbox_id}/1.tar.zst")

    with pytest.raises(SnapshotCorrupt):
        provider.resume(sandbox_id, AI_WRITEBACK, replace(info, sha256="0" * 64))
    assert containers_of(docker_client, sandbox_id) == []

    # Flip one byte of the stored object: same size, different hash.
    path = store.root / DEPLOYMENT / info.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt):
        provider.resume(sandbox_id, AI_WRITEBACK, info)
    assert containers_of(docker_client, sandbox_id) == []

    with pytest.raises(SnapshotNotFound):
        provider.resume(sandbox_id, AI_WRITEBACK, replace(info, key=f"snapshots/{sandbox_id}/9.tar.zst"))
    assert containers_of(docker_client, sandbox_id) == []


def test_resume_replaces_a_stale_container(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    provider.write_file(ref, "index.js", b"v1")
    info = provider.suspend(sandbox_id, ref, DATA_APP, f"snapshots/{sandbox_id}/1.tar.zst")
    # A crash after create and before the outcome was recorded leaves a container behind.
    stale = provider.create(sandbox_id, DATA_APP)

    new_ref = provider.resume(sandbox_id, DATA_APP, info)
    assert new_ref != stale
    assert containers_of(docker_client, sandbox_id) == [new_ref]
    assert provider.read_file(new_ref, "index.js") == b"v1"


# ---------------------------------------------------------------------------------- destroy and listing


def test_destroy_is_idempotent(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    provider.destroy(sandbox_id, ref)
    assert provider.instance(sandbox_id) is None
    assert containers_of(docker_client, sandbox_id) == []
    assert docker_client.volumes.list(filters={"label": f"{LABEL_ID}={sandbox_id}"}) == []
    provider.destroy(sandbox_id, ref)
    provider.destroy(new_id(), None)  # never existed


def test_delete_snapshot_is_idempotent(
    provider: DockerProvider, store: LocalSnapshotStore, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    info = provider.suspend(sandbox_id, ref, DATA_APP, f"snapshots/{sandbox_id}/1.tar.zst")
    provider.delete_snapshot(info)
    assert not provider.snapshot_ok(info)
    assert store.stat(f"{DEPLOYMENT}/{info.key}") is None
    provider.delete_snapshot(info)


def test_instances_are_found_by_label(
    provider: DockerProvider, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    running_id, stopped_id = new_id(), new_id()
    running = provider.create(running_id, DATA_APP)
    stopped = provider.create(stopped_id, AI_WRITEBACK)
    docker_client.api.stop(stopped, timeout=1)

    ours = {i.sandbox_id: i for i in provider.list_instances() if i.sandbox_id in (running_id, stopped_id)}
    assert ours[running_id].ref == running and ours[running_id].kind == DATA_APP
    assert ours[running_id].status == "running"
    assert ours[stopped_id].ref == stopped and ours[stopped_id].kind == AI_WRITEBACK
    assert ours[stopped_id].status == "stopped"
    assert provider.instance(stopped_id) == ours[stopped_id]


# ---------------------------------------------------------------------------------- deployments


def test_snapshots_live_under_the_deployment_prefix(
    provider: DockerProvider, store: LocalSnapshotStore, docker_client: docker.DockerClient, new_id: NewId
) -> None:
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    provider.write_file(ref, "index.js", b"mine")
    key = f"snapshots/{sandbox_id}/1.tar.zst"
    info = provider.suspend(sandbox_id, ref, DATA_APP, key)
    # Someone else's objects in the same store: another deployment's, and one outside any deployment.
    other = DockerProvider(
        DOCKER_IMAGES,
        store,
        client=docker_client,
        environ={},
        limits=TEST_LIMITS,
        deployment=f"{DEPLOYMENT}-b",
    )
    for raw in (f"{DEPLOYMENT}-b/snapshots/{sandbox_id}/2.tar.zst", f"snapshots/{sandbox_id}/3.tar.zst"):
        store.put(raw, io.BytesIO(b"not ours"))

    # The store holds it under the deployment; the provider answers with the key it was given.
    assert info.key == key
    assert store.stat(f"{DEPLOYMENT}/{key}") == info.bytes
    assert provider.list_snapshots() == [(sandbox_id, SnapshotInfo(key, None, None))]
    assert other.list_snapshots() == [
        (sandbox_id, SnapshotInfo(f"snapshots/{sandbox_id}/2.tar.zst", None, None))
    ]
    # The other deployment's provider neither sees nor deletes ours.
    assert not other.snapshot_ok(info)
    other.delete_snapshot(info)
    assert provider.snapshot_ok(info)
    new_ref = provider.resume(sandbox_id, DATA_APP, info)
    assert provider.read_file(new_ref, "index.js") == b"mine"


def test_a_container_of_another_deployment_is_never_adopted(
    provider: DockerProvider,
    store: LocalSnapshotStore,
    docker_client: docker.DockerClient,
    new_id: NewId,
) -> None:
    """Container names are per engine: two deployments holding the same sandbox id (both derived it from
    the same create idempotency key) meet at ``sbx-<id>``. The second must not reuse, report, remove or
    replace the first one's container."""
    sandbox_id = new_id()
    ref = provider.create(sandbox_id, DATA_APP)
    other = DockerProvider(
        DOCKER_IMAGES,
        store,
        client=docker_client,
        environ={},
        limits=TEST_LIMITS,
        deployment=f"{DEPLOYMENT}-b",
    )
    clash = rf"belongs to another deployment \(deployment '{DEPLOYMENT}', not '{DEPLOYMENT}-b'\)"

    with pytest.raises(ForeignSandbox, match=clash):
        other.create(sandbox_id, DATA_APP)
    with pytest.raises(ForeignSandbox, match=clash):
        other.instance(sandbox_id)
    with pytest.raises(ForeignSandbox, match=clash):
        other.destroy(sandbox_id, None)

    assert sandbox_id not in {i.sandbox_id for i in other.list_instances()}
    assert containers_of(docker_client, sandbox_id) == [ref]
    found = provider.instance(sandbox_id)
    assert found is not None and (found.ref, found.status) == (ref, "running")
