"""The SandboxProvider port's contract, run against every real provider (see conftest for the harness).

What the service relies on, and so what every provider must do the same way: idempotent create and
destroy, exec results and timeouts, file paths relative to the kind's workdir, a suspend that keeps the
kind's workspace, listings by our label/metadata and deployment, and ProviderLost when a workspace cannot
come back.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from sandbox_lifecycle.core.errors import ExecTimeout, ForeignSandbox, ProviderLost, SandboxError
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME, KINDS
from sandbox_lifecycle.core.ports import SnapshotInfo
from sandbox_lifecycle.core.sandbox import snapshot_key
from tests.support.fixtures.providers import Harness

# A little of everything a workspace file can hold: text, newlines, non-ASCII, every byte value.
BLOB = "héllo\nworld\n".encode() + bytes(range(256))


def _running(h: Harness, sandbox_id: str, kind: str = DATA_APP) -> str:
    return h.provider.create(sandbox_id, kind)


def _released(h: Harness, sandbox_id: str) -> bool:
    """Suspend released the compute: the instance is gone (Docker) or paused (E2B), never running."""
    inst = h.provider.instance(sandbox_id)
    return inst is None or inst.status == "paused"


# ---------------------------------------------------------------------------------------------- create


def test_create_is_idempotent_per_sandbox_id(harness: Harness) -> None:
    sid = harness.new_id()
    first = harness.provider.create(sid, DATA_APP)
    # A retried create (the answer was lost, or the process crashed) must find it, not make a second one.
    again = harness.provider.create(sid, DATA_APP)

    assert again == first
    ours = [i for i in harness.provider.list_instances() if i.sandbox_id == sid]
    assert [(i.ref, i.kind, i.status) for i in ours] == [(first, DATA_APP, "running")]


def test_instances_are_found_by_label(harness: Harness) -> None:
    app, repo = harness.new_id(), harness.new_id()
    app_ref = harness.provider.create(app, DATA_APP)
    repo_ref = harness.provider.create(repo, AI_WRITEBACK)

    found = harness.provider.instance(repo)
    assert found is not None
    assert (found.sandbox_id, found.ref, found.kind, found.status) == (
        repo,
        repo_ref,
        AI_WRITEBACK,
        "running",
    )
    listed = {i.sandbox_id: (i.ref, i.kind) for i in harness.provider.list_instances()}
    assert listed[app] == (app_ref, DATA_APP)
    assert listed[repo] == (repo_ref, AI_WRITEBACK)
    assert harness.provider.instance(harness.new_id()) is None


# ------------------------------------------------------------------------------------------------ exec


def test_exec_returns_stdout_stderr_and_exit_code(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())

    result = harness.provider.exec(ref, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20)

    assert (result.exit_code, result.stdout, result.stderr, result.truncated) == (3, "out\n", "err\n", False)
    ok = harness.provider.exec(ref, ["true"], timeout=20)
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "", "")


@pytest.mark.parametrize("kind", [DATA_APP, AI_WRITEBACK])
def test_exec_env_and_cwd(harness: Harness, kind: str) -> None:
    ref = _running(harness, harness.new_id(), kind)

    default = harness.provider.exec(
        ref, ["sh", "-c", 'pwd; echo "$GREETING"'], timeout=20, env={"GREETING": "hi there"}
    )
    cwd, greeting = default.stdout.splitlines()
    assert default.exit_code == 0 and greeting == "hi there"
    # The kind's workdir is the default cwd. (The E2B fake maps sandbox paths below a host directory,
    # so the suffix is what both providers agree on.)
    assert cwd.endswith(KINDS[kind].workdir)

    home = harness.provider.exec(ref, ["pwd"], timeout=20, cwd=HOME)
    assert home.exit_code == 0 and home.stdout.strip().endswith(HOME)
    assert not home.stdout.strip().endswith(KINDS[kind].workdir)


def test_exec_timeout_raises_and_kills_the_command(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())
    started = time.monotonic()

    # If the command survived its timeout it would create `late` two seconds later.
    with pytest.raises(ExecTimeout) as raised:
        harness.provider.exec(ref, ["sh", "-c", "sleep 2; touch late"], timeout=1)

    assert raised.value.timeout == 1
    assert time.monotonic() - started < 15
    time.sleep(2.5)
    assert harness.provider.exec(ref, ["ls", "-a"], timeout=20).stdout.split().count("late") == 0
    # The sandbox is still usable after a timeout.
    assert harness.provider.exec(ref, ["echo", "alive"], timeout=20).stdout == "alive\n"


# ------------------------------------------------------------------------------------------- streaming


class _Chunks:
    """What the callbacks received, with when."""

    def __init__(self) -> None:
        self.out: list[tuple[float, bytes]] = []
        self.err: list[tuple[float, bytes]] = []

    def on_stdout(self, chunk: bytes) -> None:
        assert isinstance(chunk, bytes)
        self.out.append((time.monotonic(), chunk))

    def on_stderr(self, chunk: bytes) -> None:
        assert isinstance(chunk, bytes)
        self.err.append((time.monotonic(), chunk))

    @property
    def stdout(self) -> bytes:
        return b"".join(c for _, c in self.out)

    @property
    def stderr(self) -> bytes:
        return b"".join(c for _, c in self.err)


def test_exec_streams_the_output_to_the_callbacks(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())
    seen = _Chunks()

    result = harness.provider.exec(
        ref,
        ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"],
        timeout=20,
        on_stdout=seen.on_stdout,
        on_stderr=seen.on_stderr,
    )

    assert (result.exit_code, result.stdout, result.stderr, result.truncated) == (
        3,
        "out\nmore\n",
        "err\n",
        False,
    )
    assert (seen.stdout, seen.stderr) == (b"out\nmore\n", b"err\n")


def test_a_line_reaches_on_stdout_while_the_command_still_runs(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())
    seen = _Chunks()

    result = harness.provider.exec(
        ref, ["sh", "-c", "echo a; sleep 2; echo b"], timeout=20, on_stdout=seen.on_stdout
    )
    returned = time.monotonic()

    assert result.exit_code == 0 and seen.stdout == b"a\nb\n"
    first = next(at for at, chunk in seen.out if chunk.startswith(b"a"))
    # The 'a' was handed over as it was printed, not when the command ended two seconds later.
    assert returned - first >= 1.5


def test_output_past_the_bound_is_truncated_in_the_result_but_streamed_whole(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())
    seen = _Chunks()

    result = harness.provider.exec(
        ref,
        ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x; echo e >&2"],
        timeout=20,
        on_stdout=seen.on_stdout,
        on_stderr=seen.on_stderr,
        max_output_bytes=100,
    )

    assert result.exit_code == 0 and result.truncated
    assert result.stdout_bytes == b"x" * 100 and result.stderr_bytes == b"e\n"
    assert seen.stdout == b"x" * 5000 and seen.stderr == b"e\n"


def test_a_timeout_keeps_the_output_printed_before_it(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())
    seen = _Chunks()

    with pytest.raises(ExecTimeout) as raised:
        harness.provider.exec(
            ref,
            ["sh", "-c", "echo before; echo warn >&2; sleep 5; echo after"],
            timeout=1.5,
            on_stdout=seen.on_stdout,
            on_stderr=seen.on_stderr,
        )

    assert (raised.value.stdout_bytes, raised.value.stderr_bytes) == (b"before\n", b"warn\n")
    assert raised.value.stdout == "before\n" and not raised.value.truncated
    assert (seen.stdout, seen.stderr) == (b"before\n", b"warn\n")


# ----------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind", [DATA_APP, AI_WRITEBACK])
def test_relative_paths_are_relative_to_the_kind_workdir(harness: Harness, kind: str) -> None:
    ref = _running(harness, harness.new_id(), kind)
    workdir = KINDS[kind].workdir

    harness.provider.write_file(ref, "notes/rel.bin", BLOB)

    # The same file seen three ways: relative, absolute, and by a command in the default cwd.
    assert harness.provider.read_file(ref, "notes/rel.bin") == BLOB
    assert harness.provider.read_file(ref, f"{workdir}/notes/rel.bin") == BLOB
    size = harness.provider.exec(ref, ["wc", "-c", "notes/rel.bin"], timeout=20)
    assert size.exit_code == 0 and size.stdout.split()[0] == str(len(BLOB))
    # Nothing outside the sandbox user's home, however it is spelled.
    for escape in ("../../../etc/passwd", "/etc/passwd", HOME):
        with pytest.raises(ValueError, match="outside the sandbox home"):
            harness.provider.write_file(ref, escape, b"x")
        with pytest.raises(ValueError, match="outside the sandbox home"):
            harness.provider.read_file(ref, escape)


def test_absolute_paths_under_home_round_trip(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())

    harness.provider.write_file(ref, f"{HOME}/.claude/deep/state.json", b'{"turn": 1}')
    harness.provider.write_file(ref, f"{HOME}/app/blob.bin", BLOB)
    # A whole-file write replaces the old content (no append, no stale tail).
    harness.provider.write_file(ref, f"{HOME}/app/blob.bin", b"short")

    assert harness.provider.read_file(ref, f"{HOME}/.claude/deep/state.json") == b'{"turn": 1}'
    assert harness.provider.read_file(ref, f"{HOME}/app/blob.bin") == b"short"
    assert harness.provider.exec(ref, ["cat", "blob.bin"], timeout=20).stdout == "short"


def test_reading_a_missing_file_is_file_not_found(harness: Harness) -> None:
    ref = _running(harness, harness.new_id())

    with pytest.raises(FileNotFoundError):
        harness.provider.read_file(ref, f"{HOME}/app/missing.txt")


# ------------------------------------------------------------------------------------ suspend / resume


@pytest.mark.parametrize("kind", [DATA_APP, AI_WRITEBACK])
def test_suspend_then_resume_keeps_the_workspace(harness: Harness, kind: str) -> None:
    sid = harness.new_id()
    ref = _running(harness, sid, kind)
    spec = KINDS[kind]
    # One file in each of the kind's workspace include paths (data-app: app + .claude;
    # ai-writeback: repo + .claude), one nested, and one made by a command rather than write_file.
    files = {
        f"{spec.workspace.root}/{inc}/kept/file-{i}.txt": f"{kind} {inc} {i}\n".encode()
        for i, inc in enumerate(spec.workspace.include)
    }
    for path, data in files.items():
        harness.provider.write_file(ref, path, data)
    made = harness.provider.exec(ref, ["sh", "-c", "mkdir -p sub && echo made > sub/by-exec.txt"], timeout=20)
    assert made.exit_code == 0, made.stderr

    snap = harness.provider.suspend(sid, ref, kind, snapshot_key(sid, 3))

    assert _released(harness, sid)
    assert harness.provider.snapshot_ok(snap)
    assert (sid, snap.key) in [(s, i.key) for s, i in harness.provider.list_snapshots()]

    new_ref = harness.provider.resume(sid, kind, snap)

    inst = harness.provider.instance(sid)
    assert inst is not None and (inst.ref, inst.status) == (new_ref, "running")
    for path, data in files.items():
        assert harness.provider.read_file(new_ref, path) == data
    assert harness.provider.read_file(new_ref, f"{spec.workdir}/sub/by-exec.txt") == b"made\n"
    assert harness.provider.exec(new_ref, ["cat", "sub/by-exec.txt"], timeout=20).stdout == "made\n"


def test_a_retried_suspend_returns_the_stored_snapshot(harness: Harness) -> None:
    """The reconciler re-drives a suspend whose outcome was never recorded (the process died after the
    provider call). The provider has already stored the workspace and released the compute, so the retry
    must answer with that snapshot, not ProviderLost: ProviderLost would expire the sandbox and leave a
    good snapshot to the orphan sweep."""
    sid = harness.new_id()
    ref = _running(harness, sid)
    harness.provider.write_file(ref, f"{HOME}/app/main.py", b"survives a crash\n")
    key = snapshot_key(sid, 3)
    first = harness.provider.suspend(sid, ref, DATA_APP, key)

    again = harness.provider.suspend(sid, ref, DATA_APP, key)

    assert again.key == first.key
    assert harness.provider.snapshot_ok(again)
    # What the retry returns is what the service records, so it must be enough to resume from.
    new_ref = harness.provider.resume(sid, DATA_APP, again)
    assert harness.provider.read_file(new_ref, f"{HOME}/app/main.py") == b"survives a crash\n"


def test_snapshot_lifecycle_and_idempotent_delete(harness: Harness) -> None:
    sid = harness.new_id()
    ref = _running(harness, sid)
    harness.provider.write_file(ref, f"{HOME}/app/main.py", b"print(1)\n")
    snap = harness.provider.suspend(sid, ref, DATA_APP, snapshot_key(sid, 3))
    assert harness.provider.snapshot_ok(snap)

    harness.provider.delete_snapshot(snap)
    harness.provider.delete_snapshot(snap)  # gone already is success

    assert not harness.provider.snapshot_ok(snap)
    assert sid not in [s for s, _ in harness.provider.list_snapshots()]
    # A snapshot key nobody ever stored is just as gone.
    harness.provider.delete_snapshot(SnapshotInfo(snapshot_key(harness.new_id(), 3), None, None))


@pytest.mark.parametrize("how", ["deleted", "lost"])
def test_resume_of_a_gone_snapshot_is_provider_lost(harness: Harness, how: str) -> None:
    sid = harness.new_id()
    ref = _running(harness, sid)
    harness.provider.write_file(ref, f"{HOME}/app/main.py", b"print(1)\n")
    snap = harness.provider.suspend(sid, ref, DATA_APP, snapshot_key(sid, 3))
    if how == "deleted":
        harness.provider.delete_snapshot(snap)
    else:
        harness.lose(snap)

    # ProviderLost (not a retryable ProviderError) is what lets the service expire the sandbox.
    with pytest.raises(ProviderLost) as raised:
        harness.provider.resume(sid, DATA_APP, snap)

    assert not raised.value.retryable
    assert not harness.provider.snapshot_ok(snap)
    # A failed resume leaves nothing running behind.
    assert harness.provider.instance(sid) is None


# --------------------------------------------------------------------------------------------- destroy


def test_exec_on_a_destroyed_sandbox_is_provider_lost(harness: Harness) -> None:
    sid = harness.new_id()
    ref = _running(harness, sid)
    harness.provider.destroy(sid, ref)

    with pytest.raises(ProviderLost):
        harness.provider.exec(ref, ["true"], timeout=20)


def test_destroy_is_idempotent(harness: Harness) -> None:
    gone, by_label, kept = harness.new_id(), harness.new_id(), harness.new_id()
    ref = _running(harness, gone)
    _running(harness, by_label)
    _running(harness, kept)

    harness.provider.destroy(gone, ref)
    harness.provider.destroy(gone, ref)  # gone already is success
    harness.provider.destroy(gone, None)
    # Without a recorded ref (a create whose answer was lost) it is found by its label/metadata.
    harness.provider.destroy(by_label, None)

    assert harness.provider.instance(gone) is None
    assert harness.provider.instance(by_label) is None
    listed = {i.sandbox_id for i in harness.provider.list_instances()}
    assert gone not in listed and by_label not in listed
    # Destroy touches only the sandbox it names.
    assert kept in listed


def test_destroy_of_a_suspended_sandbox(harness: Harness) -> None:
    sid = harness.new_id()
    ref = _running(harness, sid)
    snap = harness.provider.suspend(sid, ref, DATA_APP, snapshot_key(sid, 3))

    # The service destroys the compute, then deletes the snapshot; both must accept the suspended state.
    harness.provider.destroy(sid, ref)
    harness.provider.delete_snapshot(snap)

    assert harness.provider.instance(sid) is None
    assert not harness.provider.snapshot_ok(snap)
    assert sid not in [s for s, _ in harness.provider.list_snapshots()]


# ------------------------------------------------------------------------------------------ deployments


def test_listings_are_per_deployment(harness: Harness) -> None:
    """Two stacks on one engine / one E2B team each list only their own: what the other holds is not
    theirs to reconcile away as an orphan."""
    other = harness.other()
    mine: dict[str, str] = {}
    theirs: dict[str, str] = {}
    for provider, held in ((harness.provider, mine), (other, theirs)):
        running, suspended = harness.new_id(), harness.new_id()
        provider.create(running, DATA_APP)
        ref = provider.create(suspended, AI_WRITEBACK)
        snap = provider.suspend(suspended, ref, AI_WRITEBACK, snapshot_key(suspended, 3))
        held.update(running=running, suspended=suspended, snapshot=snap.key)

    for provider, held in ((harness.provider, mine), (other, theirs)):
        # A suspended sandbox lists as paused on E2B and not at all on Docker; it is ours either way.
        listed = {i.sandbox_id for i in provider.list_instances()}
        assert held["running"] in listed and listed <= {held["running"], held["suspended"]}
        assert [(s, i.key) for s, i in provider.list_snapshots()] == [(held["suspended"], held["snapshot"])]
        inst = provider.instance(held["running"])
        assert inst is not None and inst.status == "running"


def test_a_snapshot_of_one_deployment_is_invisible_to_another(harness: Harness) -> None:
    sid = harness.new_id()
    ref = _running(harness, sid)
    harness.provider.write_file(ref, "main.py", b"mine")
    snap = harness.provider.suspend(sid, ref, DATA_APP, snapshot_key(sid, 3))

    other = harness.other()

    assert other.list_snapshots() == []
    assert other.list_instances() == []
    # Still there for its own deployment, whole.
    assert [(s, i.key) for s, i in harness.provider.list_snapshots()] == [(sid, snap.key)]
    new_ref = harness.provider.resume(sid, DATA_APP, snap)
    assert harness.provider.read_file(new_ref, "main.py") == b"mine"


def test_another_deployment_cannot_act_on_our_sandbox(harness: Harness) -> None:
    """A copied database (a restored backup) is another deployment holding our ids and refs: every call
    that acts on an instance refuses it with ForeignSandbox before doing anything."""
    sid = harness.new_id()
    ref = _running(harness, sid)
    harness.provider.write_file(ref, "main.py", b"mine")
    copy = harness.other()

    with pytest.raises(ForeignSandbox):
        copy.exec(ref, ["touch", "/home/sandbox/app/touched"], timeout=10)
    with pytest.raises(ForeignSandbox):
        copy.write_file(ref, "main.py", b"theirs")
    with pytest.raises(ForeignSandbox):
        copy.read_file(ref, "main.py")
    with pytest.raises(ForeignSandbox):
        copy.suspend(sid, ref, DATA_APP, snapshot_key(sid, 9))
    with pytest.raises(ForeignSandbox):
        copy.destroy(sid, ref)

    inst = harness.provider.instance(sid)
    assert inst is not None and (inst.ref, inst.status) == (ref, "running")
    assert harness.provider.read_file(ref, "main.py") == b"mine"
    with pytest.raises(FileNotFoundError):
        harness.provider.read_file(ref, "/home/sandbox/app/touched")

    # Suspended: the copy can neither resume nor delete the snapshot (on Docker it does not even see it:
    # the archive is under the original's prefix).
    snap = harness.provider.suspend(sid, ref, DATA_APP, snapshot_key(sid, 3))
    with pytest.raises(SandboxError):
        copy.resume(sid, DATA_APP, snap)
    with contextlib.suppress(ForeignSandbox):  # E2B sees it and refuses; Docker sees nothing to delete
        copy.delete_snapshot(snap)
    assert not copy.snapshot_ok(snap)
    assert harness.provider.snapshot_ok(snap)
    assert _released(harness, sid)
    new_ref = harness.provider.resume(sid, DATA_APP, snap)
    assert harness.provider.read_file(new_ref, "main.py") == b"mine"


# ---------------------------------------------------------------------------------------------- egress


def test_set_egress_checks_alike_applies_idempotently_and_loses_a_gone_sandbox(harness: Harness) -> None:
    provider = harness.provider
    # One check on every provider: a list means the same on each.
    assert provider.check_egress(["PKGS.test", "*.example.com:8443"]) == ("pkgs.test", "*.example.com:8443")
    for refused in ("10.0.0.1", "169.254.169.254", "localhost", "*", "10.0.0.0/8"):
        with pytest.raises(ValueError):
            provider.check_egress([refused])
    sid = harness.new_id()
    ref = _running(harness, sid)
    for allow in (("pkgs.test",), ("pkgs.test",), (), None):
        provider.set_egress(sid, ref, DATA_APP, allow)
    provider.destroy(sid, ref)
    with pytest.raises(ProviderLost):
        provider.set_egress(sid, ref, DATA_APP, ("pkgs.test",))
