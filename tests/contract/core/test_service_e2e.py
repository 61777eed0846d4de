"""SandboxService end to end on real components: the SQL event store (SQLite and PostgreSQL) with the real
E2B provider (SDK against the loopback fake) and the real Docker provider.

Each test ends with ``verify(store, policy) == []``: whatever happened, the read model and the armed
deadlines are exactly what a replay of the log gives.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import SandboxBusy, SandboxExpired
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP, HOME, KINDS
from sandbox_lifecycle.core.ports import SandboxProvider, SnapshotInfo
from sandbox_lifecycle.core.projection import Policy, project
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import SandboxService, utcnow
from sandbox_lifecycle.events.codec import encode
from sandbox_lifecycle.events.records import SandboxRow
from sandbox_lifecycle.events.store import SqlEventStore, open_store
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.providers import (
    PROVIDER_PARAMS,
    docker_provider,
    e2b_provider,
    new_deployment,
    new_sandbox_id,
    remove_docker_sandboxes,
    unlink_snapshot,
)
from tests.support.history import lifecycle_types

# Short enough that a test can step past each timer with fire_due(now=...), long enough that nothing fires
# on its own while a test runs (the clock is the real one; only fire_due is told a later time).
POLICY = Policy(idle_timeout=timedelta(minutes=5), retention=timedelta(hours=1), lease=timedelta(minutes=10))
SECOND = timedelta(seconds=1)


@dataclass
class World:
    provider_name: str
    url: str
    store: SqlEventStore
    # The service's provider, of a deployment of this test's own, for looking at what it holds.
    provider: SandboxProvider
    service: SandboxService
    lose: Any
    # A provider of another deployment on the same engine (or fake) and snapshot store.
    make: Any
    fake: FakeE2B | None = None
    # Every deployment the test used, for the cleanup.
    deployments: list[str] = field(default_factory=list)

    def neighbour(self, url: str) -> SandboxService:
        """Another stack: its own event log at ``url`` and its own deployment, sharing the provider."""
        self.deployments.append(new_deployment())
        return SandboxService(open_store(url), self.make(self.deployments[-1]), policy=POLICY)

    def replica(self) -> SandboxService:
        """Another process's service on the same database and provider (its own store connection pool)."""
        return SandboxService(open_store(self.url), self.service.provider, policy=POLICY)

    def snapshot(self, row: SandboxRow) -> SnapshotInfo:
        assert row.snapshot_key is not None, row
        return SnapshotInfo(row.snapshot_key, row.snapshot_sha256, row.snapshot_bytes)

    def released(self, sandbox_id: str) -> bool:
        inst = self.provider.instance(sandbox_id)
        return inst is None or inst.status == "paused"

    def clean(self) -> list[str]:
        return verify(self.store, POLICY)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("clean_sqlite_url" if request.param == "sqlite" else "clean_pg_url")
    return url


@pytest.fixture(params=PROVIDER_PARAMS)
def world(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[World]:
    store = open_store(db_url)
    # A deployment of the test's own: its reconcile cannot reap other runs' sandboxes on a shared engine.
    deployment = new_deployment()
    if request.param == "e2b":
        fake: FakeE2B = request.getfixturevalue("fake_e2b")
        provider = e2b_provider(fake, deployment)
        service = SandboxService(store, provider, policy=POLICY)
        yield World(
            "e2b",
            db_url,
            store,
            provider,
            service,
            lambda s: fake.lose(s.key),
            lambda d: e2b_provider(fake, d),
            fake,
        )
        store.close()
        return
    client = request.getfixturevalue("docker_client")
    snapshot_dir = tmp_path / "snapshots"
    real = docker_provider(client, snapshot_dir, deployment)
    service = SandboxService(store, real, policy=POLICY)
    w = World(
        "docker",
        db_url,
        store,
        real,
        service,
        unlink_snapshot(snapshot_dir, deployment),
        lambda d: docker_provider(client, snapshot_dir, d),
        deployments=[deployment],
    )
    try:
        yield w
    finally:
        remove_docker_sandboxes(client, deployments=w.deployments)
        store.close()


def conversation() -> str:
    return "conv-" + uuid.uuid4().hex[:12]


def types(w: World, sandbox_id: str) -> list[str]:
    return lifecycle_types(w.service.history(sandbox_id))


# ------------------------------------------------------------------------------------------------ turns


def test_turns_keep_the_workspace_across_suspend_and_resume(world: World) -> None:
    w, conv = world, conversation()
    app = KINDS[DATA_APP].workdir

    with w.service.turn(conv, DATA_APP) as sbx:
        assert w.service.get(sbx.id).state == lc.RUNNING
        sbx.write_file(f"{app}/main.py", "print('turn 1')\n")
        sbx.write_file(f"{HOME}/.claude/session.json", '{"turn": 1}')
        first = sbx.exec(["sh", "-c", "echo turn1 >> journal.txt; cat main.py; echo warn >&2; exit 4"])
        assert (first.exit_code, first.stdout, first.stderr) == (4, "print('turn 1')\n", "warn\n")

    row = w.service.get(sbx.id)
    assert row.state == lc.SUSPENDED and row.conversation_id == conv
    # Leaving the turn released the compute and kept a verified snapshot.
    assert w.released(sbx.id)
    assert w.provider.snapshot_ok(w.snapshot(row))

    with w.service.turn(conv, DATA_APP) as again:
        assert again.id == sbx.id  # the conversation's sandbox, resumed; not a new one
        assert again.read_file(f"{app}/main.py") == b"print('turn 1')\n"
        assert again.read_file(f"{HOME}/.claude/session.json") == b'{"turn": 1}'
        second = again.exec("echo turn2 >> journal.txt && cat journal.txt")
        assert (second.exit_code, second.stdout) == (0, "turn1\nturn2\n")

    # A turn whose body raises still suspends, and the workspace of both turns survives it.
    with pytest.raises(RuntimeError, match="agent crashed"), w.service.turn(conv, DATA_APP) as third:
        assert third.exec(["cat", "journal.txt"]).stdout == "turn1\nturn2\n"
        raise RuntimeError("agent crashed")
    assert w.service.get(sbx.id).state == lc.SUSPENDED
    assert w.released(sbx.id)

    timeline = types(w, sbx.id)
    assert timeline[:3] == ["CreationRequested", "Created", "TurnStarted"]
    assert timeline.count("TurnStarted") == 3 and timeline.count("TurnEnded") == 3
    assert timeline.count("Suspended") == 3 and timeline.count("Resumed") == 2
    assert timeline[-1] == "Suspended"
    assert w.clean() == []


def test_a_second_turn_on_an_open_conversation_is_busy(world: World) -> None:
    w, conv = world, conversation()
    other = w.replica()

    with w.service.turn(conv, AI_WRITEBACK) as sbx:
        before = w.service.get(sbx.id)
        with pytest.raises(SandboxBusy), other.turn(conv, AI_WRITEBACK):
            pytest.fail("a second turn on an open conversation must not start")
        # The refused turn changed nothing: same state, same version, the open turn still works.
        assert w.service.get(sbx.id) == before
        assert sbx.exec(["echo", "still mine"]).stdout == "still mine\n"
    assert w.service.get(sbx.id).state == lc.SUSPENDED
    other.store.close()  # type: ignore[attr-defined]
    assert w.clean() == []


def test_racing_turns_on_a_suspended_sandbox_open_exactly_one(world: World) -> None:
    w, conv = world, conversation()
    with w.service.turn(conv, DATA_APP) as sbx:
        sbx.write_file(f"{HOME}/app/state.txt", "v1")
    replicas = {"a": w.replica(), "b": w.replica()}
    start = threading.Barrier(2, timeout=30)
    finished = {name: threading.Event() for name in replicas}
    outcome: dict[str, str] = {}

    def attempt(name: str) -> None:
        peer = "b" if name == "a" else "a"
        try:
            start.wait()
            with replicas[name].turn(conv, DATA_APP) as handle:
                outcome[name] = handle.read_file(f"{HOME}/app/state.txt").decode()
                # Hold the turn open until the other replica's attempt is over, so they truly overlap.
                finished[peer].wait(timeout=60)
        except SandboxBusy:
            outcome[name] = "busy"
        except Exception as exc:  # reported through `outcome`, asserted below
            outcome[name] = f"error: {exc!r}"
        finally:
            finished[name].set()

    threads = [threading.Thread(target=attempt, args=(n,), daemon=True) for n in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    # Both replicas raced the same resume: one got the sandbox (and its workspace), the other was told busy.
    assert sorted(outcome.values()) == ["busy", "v1"], outcome
    assert types(w, sbx.id).count("Resumed") == 1 and types(w, sbx.id).count("TurnStarted") == 2
    assert w.service.get(sbx.id).state == lc.SUSPENDED
    for replica in replicas.values():
        replica.store.close()  # type: ignore[attr-defined]
    assert w.clean() == []


# ----------------------------------------------------------------------------------------------- timers


def test_idle_timeout_suspends_through_fire_due(world: World) -> None:
    w, conv = world, conversation()
    with w.service.turn(conv, DATA_APP, keep_warm=True) as sbx:
        sbx.write_file(f"{HOME}/app/main.py", "warm")
    row = w.service.get(sbx.id)
    assert row.state == lc.IDLE and row.last_activity_at is not None
    due = row.last_activity_at + POLICY.idle_timeout

    # Not yet due: nothing fires, nothing moves.
    assert w.service.fire_due(now=due - SECOND).fired == []
    assert w.service.get(sbx.id).version == row.version

    report = w.service.fire_due(now=due + SECOND)

    assert (report.fired, report.errors) == ([f"{sbx.id}:idle"], [])
    assert w.service.get(sbx.id).state == lc.SUSPENDED
    assert w.released(sbx.id)
    timeline = w.service.history(sbx.id)
    assert lifecycle_types(timeline)[-3:] == ["IdleTimeoutElapsed", "SuspendRequested", "Suspended"]
    # The timer fired once: a second sweep at the same time finds nothing due.
    assert w.service.fire_due(now=due + SECOND).fired == []
    # The timer's suspend kept the workspace like a turn's does.
    with w.service.turn(conv, DATA_APP) as back:
        assert back.read_file(f"{HOME}/app/main.py") == b"warm"
    assert w.clean() == []


def test_retention_expires_the_sandbox_and_deletes_its_snapshot(world: World) -> None:
    w, conv = world, conversation()
    with w.service.turn(conv, DATA_APP) as sbx:
        sbx.write_file(f"{HOME}/app/main.py", "old")
    row = w.service.get(sbx.id)
    snapshot = w.snapshot(row)
    assert w.provider.snapshot_ok(snapshot)
    due = row.state_since + POLICY.retention

    assert w.service.fire_due(now=due - SECOND).fired == []
    report = w.service.fire_due(now=due + SECOND)

    assert (report.fired, report.errors) == ([f"{sbx.id}:retention"], [])
    row = w.service.get(sbx.id)
    assert (row.state, row.expired_reason) == (lc.EXPIRED, "retention")
    # Gone at the provider too: no snapshot, no instance (paused or otherwise).
    assert not w.provider.snapshot_ok(snapshot)
    assert sbx.id not in [sid for sid, _ in w.provider.list_snapshots()]
    assert w.provider.instance(sbx.id) is None
    with pytest.raises(SandboxExpired, match="retention"):
        w.service.resume(sbx.id)
    with pytest.raises(SandboxExpired, match="retention"):
        w.service.exec(sbx.id, ["true"])
    # The conversation goes on in a fresh sandbox, with a fresh workspace.
    with w.service.turn(conv, DATA_APP) as fresh:
        assert fresh.id != sbx.id
        with pytest.raises(FileNotFoundError):
            fresh.read_file(f"{HOME}/app/main.py")
    assert w.clean() == []


# ------------------------------------------------------------------------------------ provider reality


def test_a_suspend_interrupted_after_the_provider_finished_is_recovered(world: World) -> None:
    w = world
    row = w.service.create(DATA_APP, conversation())
    w.service.write_file(row.id, f"{HOME}/app/main.py", b"keep me")
    # A process appended the intent exactly as the service does, made the provider call, and died
    # before it could append the outcome.
    state = w.service.load(row.id)
    events = sb.decide(state, sb.RequestSuspend(reason="user"), utcnow())
    intent = sb.replay(row.id, events, start=state)
    w.store.append(row.id, state.version, [encode(e) for e in events], projection=project(intent, POLICY))
    assert intent.provider_ref and intent.pending_snapshot_key
    w.provider.suspend(row.id, intent.provider_ref, DATA_APP, intent.pending_snapshot_key)
    assert intent.state_since is not None

    # Within the lease nobody touches it; after the lease the sweep re-drives it from provider reality.
    assert w.service.fire_due(now=intent.state_since + POLICY.lease - SECOND).recovered == []
    report = w.service.fire_due(now=intent.state_since + POLICY.lease + SECOND)

    assert (report.recovered, report.errors) == ([row.id], [])
    # The workspace was stored: the true outcome is "suspended", never "lost".
    recovered = w.service.get(row.id)
    assert (recovered.state, recovered.expired_reason) == (lc.SUSPENDED, None)
    assert w.service.history(row.id)[-1].reason == "recovery"
    w.service.resume(row.id)
    assert w.service.read_file(row.id, f"{HOME}/app/main.py") == b"keep me"
    assert w.clean() == []


def test_reconcile_removes_orphans_and_keeps_live_sandboxes(world: World) -> None:
    w = world
    live = w.service.create(DATA_APP, conversation())
    with w.service.turn(conversation(), AI_WRITEBACK) as parked:
        parked.write_file(f"{HOME}/repo/model.sql", "select 1")
    parked_row = w.service.get(parked.id)
    # Provider sandboxes no record owns: one running, one suspended (a Docker archive / a paused E2B box).
    running_orphan, suspended_orphan = new_sandbox_id(), new_sandbox_id()
    w.provider.create(running_orphan, DATA_APP)
    ref = w.provider.create(suspended_orphan, DATA_APP)
    w.provider.suspend(suspended_orphan, ref, DATA_APP, f"snapshots/{suspended_orphan}/3.tar.zst")

    report = w.service.reconcile()

    assert report.errors == []
    for orphan in (running_orphan, suspended_orphan):
        assert any(orphan in msg for msg in report.removed), report.removed
        assert w.provider.instance(orphan) is None
        assert orphan not in [sid for sid, _ in w.provider.list_snapshots()]
    # What the log owns is untouched: the live sandbox still runs, the suspended one keeps its snapshot.
    inst = w.provider.instance(live.id)
    assert inst is not None and inst.status == "running"
    assert w.service.exec(live.id, ["echo", "ok"]).stdout == "ok\n"
    assert w.provider.snapshot_ok(w.snapshot(parked_row))
    assert w.service.get(parked.id) == parked_row
    # Reconciling again finds nothing left to remove.
    assert w.service.reconcile().removed == []
    assert w.clean() == []


def test_a_lost_snapshot_expires_the_sandbox_as_provider_lost(world: World) -> None:
    w, conv = world, conversation()
    with w.service.turn(conv, DATA_APP) as sbx:
        sbx.write_file(f"{HOME}/app/main.py", "x")
    # E2B dropped the paused sandbox / the archive vanished from the snapshot directory.
    w.lose(w.snapshot(w.service.get(sbx.id)))

    with pytest.raises(SandboxExpired, match="provider_lost"), w.service.turn(conv, DATA_APP):
        pytest.fail("a turn on a lost workspace must not start")

    row = w.service.get(sbx.id)
    assert (row.state, row.expired_reason) == (lc.EXPIRED, "provider_lost")
    assert types(w, sbx.id)[-2:] == ["ResumeRequested", "ProviderLost"]
    assert w.provider.instance(sbx.id) is None
    # Not a crash and not a wedge: the conversation's next turn gets a fresh sandbox.
    with w.service.turn(conv, DATA_APP) as fresh:
        assert fresh.id != sbx.id
        assert fresh.exec(["echo", "fresh"]).stdout == "fresh\n"
    assert w.clean() == []


def test_reconcile_leaves_another_deployments_sandboxes_alone(
    world: World, tmp_path: Path, migrated_sqlite_template: Path
) -> None:
    """Two stacks on one Docker engine (or one E2B team), each with its own event log: to each, the other's
    sandboxes are not in its log, yet they are not its orphans to remove."""
    w = world
    other_db = tmp_path / "other.db"
    shutil.copyfile(migrated_sqlite_template, other_db)
    other = w.neighbour(f"sqlite:///{other_db}")
    # Ours: one running, one suspended (a stored archive / a paused E2B sandbox), one orphan.
    live = w.service.create(DATA_APP, conversation())
    with w.service.turn(conversation(), AI_WRITEBACK) as parked:
        parked.write_file("model.sql", "select 1")
    parked_row = w.service.get(parked.id)
    orphan = new_sandbox_id()
    w.provider.create(orphan, DATA_APP)
    # Theirs: the same shapes, in their log.
    their_live = other.create(DATA_APP, conversation())
    with other.turn(conversation(), DATA_APP) as their_parked:
        their_parked.write_file("main.py", "print('theirs')")
    their_parked_row = other.get(their_parked.id)

    theirs = other.reconcile()

    assert (theirs.removed, theirs.errors) == ([], [])
    assert w.service.exec(live.id, ["echo", "ok"]).stdout == "ok\n"
    assert w.provider.snapshot_ok(w.snapshot(parked_row))
    inst = w.provider.instance(orphan)
    assert inst is not None and inst.status == "running"

    ours = w.service.reconcile()

    # Our reconcile removes our orphan and nothing of theirs.
    assert ours.errors == [] and len(ours.removed) == 1 and orphan in ours.removed[0], ours.removed
    assert other.exec(their_live.id, ["echo", "ok"]).stdout == "ok\n"
    with other.turn(their_parked_row.conversation_id or "", DATA_APP) as back:
        assert back.id == their_parked.id
        assert back.read_file("main.py") == b"print('theirs')"
    # Each lists only its own.
    listed = {i.sandbox_id for i in w.provider.list_instances()}
    assert live.id in listed and their_live.id not in listed and their_parked.id not in listed
    assert [sid for sid, _ in w.provider.list_snapshots()] == [parked.id]
    with w.service.turn(parked_row.conversation_id or "", AI_WRITEBACK) as mine:
        assert mine.read_file("model.sql") == b"select 1"
    assert w.clean() == []
    assert verify(other.store, POLICY) == []
    other.store.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- idempotent create (G1)


def test_an_idempotent_create_retry_returns_the_first_sandbox_and_keeps_it(world: World) -> None:
    w, key = world, "key-" + uuid.uuid4().hex
    first = w.service.create(DATA_APP, idempotency_key=key)
    w.service.write_file(first.id, "main.py", b"from the first call")

    again = w.service.create(DATA_APP, idempotency_key=key)

    # The very same sandbox, untouched: same version, same container, its workspace still there.
    assert again.version == first.version
    assert (again.id, again.state, again.provider_ref) == (first.id, lc.IDLE, first.provider_ref)
    inst = w.provider.instance(first.id)
    assert inst is not None and (inst.ref, inst.status) == (first.provider_ref, "running")
    assert w.service.read_file(first.id, "main.py") == b"from the first call"
    assert types(w, first.id).count("Created") == 1

    # Suspended, then retried again: still the first one, not resumed, not recreated.
    w.service.suspend(first.id)
    suspended = w.service.get(first.id)
    assert w.service.create(DATA_APP, idempotency_key=key) == suspended
    assert w.released(first.id) and w.provider.snapshot_ok(w.snapshot(suspended))
    assert w.clean() == []


# ----------------------------------------------------------------------------------- corrupt stream (G7)


def corrupt(url: str, sandbox_id: str, version: int) -> None:
    """Damage one event in place with raw SQL, as a bad migration or a manual edit would: a field of the
    wrong type (Created's provider_ref must be a string)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    value = "CAST(:data AS jsonb)" if engine.dialect.name == "postgresql" else ":data"
    with engine.begin() as conn:
        done = conn.execute(
            sa.text(f"UPDATE events SET data = {value} WHERE stream_id = :sid AND version = :v"),
            {"data": '{"provider_ref": 42}', "sid": sandbox_id, "v": version},
        )
        assert done.rowcount == 1
    engine.dispose()


def test_one_corrupt_stream_does_not_stop_the_sweep(world: World) -> None:
    w = world
    good = w.service.create(DATA_APP, conversation())
    bad = w.service.create(DATA_APP, conversation())
    orphan = new_sandbox_id()
    w.provider.create(orphan, DATA_APP)
    corrupt(w.url, bad.id, 2)  # its Created event

    report = w.service.sweep(utcnow() + POLICY.idle_timeout + SECOND)

    # The bad one is reported, by stream and version, once; everything else was done.
    (error,) = report.errors
    assert bad.id in error and f"'{bad.id}'" in error and "version 2" in error, error
    assert report.fired == [f"{good.id}:idle"]
    assert w.service.get(good.id).state == lc.SUSPENDED
    assert len(report.removed) == 1 and orphan in report.removed[0], report.removed
    assert w.provider.instance(orphan) is None


# ---------------------------------------------------------------------- waiting for another caller (G11)


def test_exec_during_another_callers_resume_waits_for_it_and_runs(world: World) -> None:
    w = world
    row = w.service.create(DATA_APP, conversation())
    w.service.write_file(row.id, "main.py", b"kept across the resume")
    w.service.suspend(row.id)
    resuming = threading.Event()
    real_resume = w.provider.resume

    def slow_resume(*args: Any, **kwargs: Any) -> str:
        resuming.set()
        time.sleep(1.0)  # long enough that the exec surely arrives while the resume is in flight
        return real_resume(*args, **kwargs)

    w.provider.resume = slow_resume  # type: ignore[method-assign]
    other = w.replica()
    resumer = threading.Thread(target=other.resume, args=(row.id,))
    resumer.start()
    try:
        assert resuming.wait(60)
        assert w.service.get(row.id).state == lc.RESUMING

        result = w.service.exec(row.id, ["cat", "main.py"])
    finally:
        resumer.join(120)

    assert (result.exit_code, result.stdout) == (0, "kept across the resume")
    # One resume, by the other caller: the exec waited for it instead of failing busy or resuming again.
    assert types(w, row.id).count("ResumeRequested") == 1
    # Resuming a live sandbox is a no-op success.
    before = w.service.get(row.id)
    assert w.service.resume(row.id) == before
    other.store.close()  # type: ignore[attr-defined]
    assert w.clean() == []


# ------------------------------------------------------------------------- leftovers of killed suspends (G5)


def test_the_sweep_removes_what_a_killed_suspend_left_in_the_snapshot_store(
    world: World, tmp_path: Path
) -> None:
    if world.provider_name != "docker":
        pytest.skip("E2B pauses the instance itself: no upload of ours to leave behind")
    w = world
    row = w.service.create(DATA_APP, conversation())
    # What `put` leaves beside its target when the process is killed mid-upload: a temp file nothing
    # lists. One stale (older than the lease), one fresh (a suspend that may still be running), one of
    # another deployment sharing the directory.
    ours = tmp_path / "snapshots" / w.deployments[0] / "snapshots" / row.id
    ours.mkdir(parents=True)
    stale, fresh = ours / ".3.tar.zst.k1ll3d.partial", ours / ".5.tar.zst.runn1n.partial"
    theirs = tmp_path / "snapshots" / "another" / "snapshots" / row.id / ".3.tar.zst.th31rs.partial"
    theirs.parent.mkdir(parents=True)
    for path in (stale, fresh, theirs):
        path.write_bytes(b"half a snapshot")
    old = (utcnow() - POLICY.lease - SECOND).timestamp()
    os.utime(stale, (old, old))
    os.utime(theirs, (old, old))

    report = w.service.sweep()

    assert report.errors == []
    assert report.removed == [
        f"removed stale upload {w.deployments[0]}/snapshots/{row.id}/.3.tar.zst.k1ll3d.partial"
    ]
    assert not stale.exists() and fresh.exists() and theirs.exists()
    assert w.service.get(row.id).state == lc.IDLE
    assert w.clean() == []
