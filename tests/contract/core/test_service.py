"""The service driven through fakes at the port boundary (the real adapters have their own suites)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import (
    CommandFailed,
    ConcurrencyError,
    ExecTimeout,
    ForeignSandbox,
    ProviderError,
    ProviderLost,
    SandboxBusy,
    SandboxError,
    SandboxExpired,
    SideEffectFailed,
)
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.core.projection import Policy, project
from sandbox_lifecycle.core.replay import verify
from sandbox_lifecycle.core.service import FOREIGN, SandboxService, SweepReport
from sandbox_lifecycle.events.codec import encode
from sandbox_lifecycle.events.records import Projection, SandboxRow
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import Clock, FakeEngine, FakeProvider

POLICY = Policy(idle_timeout=timedelta(minutes=30), retention=timedelta(days=7), lease=timedelta(minutes=10))


def types(service: SandboxService, sid: str) -> list[str]:
    return [h.type for h in service.history(sid)]


def test_turns_keep_the_workspace_across_suspend(service: SandboxService, provider: FakeProvider) -> None:
    with service.turn("conv-1", "data-app") as sbx:
        sbx.write_file("app/main.py", "print(1)")
        assert service.get(sbx.id).state == lc.RUNNING
    assert service.get(sbx.id).state == lc.SUSPENDED
    assert provider.instances == {}
    with service.turn("conv-1", "data-app") as again:
        assert again.id == sbx.id
        assert again.read_file("app/main.py") == b"print(1)"
    assert types(service, sbx.id) == [
        "CreationRequested",
        "Created",
        "TurnStarted",
        "TurnEnded",
        "SuspendRequested",
        "Suspended",
        "ResumeRequested",
        "Resumed",
        "TurnStarted",
        "TurnEnded",
        "SuspendRequested",
        "Suspended",
    ]
    # Each suspend's snapshot is a checkpoint: kept until retention collects it (docs/checkpoints.md).
    assert list(provider.snapshots) == [c.snapshot_key for c in service.checkpoints(sbx.id)]
    assert service.checkpoints(sbx.id)[-1].snapshot_key == service.get(sbx.id).snapshot_key


def test_turn_suspends_when_the_body_raises(service: SandboxService) -> None:
    with pytest.raises(RuntimeError, match="agent crashed"), service.turn("c", "ai-writeback") as sbx:
        raise RuntimeError("agent crashed")
    assert service.get(sbx.id).state == lc.SUSPENDED


def test_second_turn_on_an_open_conversation_is_busy_and_changes_nothing(service: SandboxService) -> None:
    with service.turn("c", "data-app") as sbx:
        version = service.get(sbx.id).version
        with pytest.raises(SandboxBusy), service.turn("c", "data-app"):
            pass
        assert service.get(sbx.id).version == version
        assert service.get(sbx.id).state == lc.RUNNING


def test_keep_warm_leaves_it_idle(service: SandboxService) -> None:
    with service.turn("c", "data-app", keep_warm=True) as sbx:
        pass
    assert service.get(sbx.id).state == lc.IDLE


def test_failed_recording_destroys_the_new_provider_sandbox(
    service: SandboxService, store: EventStore, provider: FakeProvider
) -> None:
    original = store.append

    def append_failing_on_created(stream_id, expected_version, events, **kw):  # type: ignore[no-untyped-def]
        if events and events[0].type == "Created":
            raise ConcurrencyError(stream_id, expected_version, "simulated")
        return original(stream_id, expected_version, events, **kw)

    store.append = append_failing_on_created  # type: ignore[method-assign]
    with pytest.raises(ConcurrencyError):
        service.create("data-app")
    assert [op for op, _ in provider.calls] == ["create", "destroy"]
    assert provider.instances == {}


def test_provider_failure_on_create_expires_with_the_error(
    service: SandboxService, provider: FakeProvider
) -> None:
    provider.fail["create"] = ProviderError("image lightdash-sandbox:local is missing")
    with pytest.raises(ProviderError):
        service.create("data-app", "c")
    (row,) = service.list()
    assert row.state == lc.EXPIRED
    assert "image" in service.history(row.id)[-1].data["error"]  # type: ignore[operator]


def test_idle_timeout_suspends_and_is_recorded(service: SandboxService, clock: Clock) -> None:
    row = service.create("data-app")
    clock.advance(minutes=29)
    assert service.fire_due().fired == []
    service.touch(row.id)
    clock.advance(minutes=29)
    assert service.fire_due().fired == []  # the touch moved the deadline
    clock.advance(minutes=2)
    assert service.fire_due().fired == [f"{row.id}:idle"]
    hist = service.history(row.id)
    assert [h.type for h in hist[-3:]] == ["IdleTimeoutElapsed", "SuspendRequested", "Suspended"]
    assert {h.reason for h in hist[-3:]} == {"idle_timeout"}
    assert service.get(row.id).state == lc.SUSPENDED


def test_activity_is_coalesced(service: SandboxService, clock: Clock) -> None:
    row = service.create("data-app")
    for _ in range(50):
        service.exec(row.id, ["true"])
        clock.advance(seconds=1)
    # 50 execs within a minute: at most one or two activity events, never fifty.
    assert types(service, row.id).count("ActivityRecorded") <= 2


def test_retention_expires_and_resume_says_why(
    service: SandboxService, clock: Clock, provider: FakeProvider
) -> None:
    with service.turn("c", "data-app") as sbx:
        pass
    clock.advance(days=7, seconds=1)
    assert service.fire_due().fired == [f"{sbx.id}:retention"]
    row = service.get(sbx.id)
    assert row.state == lc.EXPIRED and row.expired_reason == "retention"
    assert provider.snapshots == {}
    with pytest.raises(SandboxExpired, match="retention"):
        service.resume(sbx.id)
    # A new turn on the conversation starts a fresh sandbox.
    with service.turn("c", "data-app") as fresh:
        assert fresh.id != sbx.id


def test_lost_snapshot_expires_with_provider_lost(service: SandboxService, provider: FakeProvider) -> None:
    with service.turn("c", "data-app") as sbx:
        pass
    provider.snapshots.clear()
    with pytest.raises(SandboxExpired, match="provider_lost"), service.turn("c", "data-app"):
        pass
    assert service.get(sbx.id).expired_reason == "provider_lost"


def test_failed_suspend_returns_to_idle_and_keeps_the_container(
    service: SandboxService, provider: FakeProvider
) -> None:
    row = service.create("data-app")
    provider.fail["suspend"] = ProviderError("snapshot store unreachable")
    with pytest.raises(ProviderError):
        service.suspend(row.id)
    assert service.get(row.id).state == lc.IDLE
    assert row.id in provider.instances
    service.suspend(row.id)
    assert service.get(row.id).state == lc.SUSPENDED


def test_stuck_suspend_is_recovered_after_the_lease(
    service: SandboxService, store: EventStore, provider: FakeProvider, clock: Clock
) -> None:
    row = service.create("data-app")
    # A process appended the intent and died before the provider call.
    state = service.load(row.id)
    events = sb.decide(state, sb.RequestSuspend(), clock())
    after = sb.replay(row.id, events, start=state)
    store.append(row.id, state.version, [encode(e) for e in events], projection=project(after, POLICY))
    clock.advance(minutes=5)
    assert service.sweep().recovered == []
    clock.advance(minutes=6)
    assert service.sweep().recovered == [row.id]
    assert service.get(row.id).state == lc.SUSPENDED
    assert service.history(row.id)[-1].reason == "recovery"
    assert verify(store, POLICY) == []


def test_orphans_are_removed(service: SandboxService, provider: FakeProvider) -> None:
    provider.create("unknown0000000000", "data-app")
    provider.snapshots["snapshots/gone0000000000000/3.tar.zst"] = provider.engine.root / "gone"
    keep = service.create("data-app")
    report = service.reconcile()
    assert len(report.removed) == 2
    assert list(provider.instances) == [keep.id]
    assert provider.snapshots == {}


def _changed_after_listing(
    store: EventStore,
    monkeypatch: pytest.MonkeyPatch,
    sid: str,
    change: Callable[[], object],
    *,
    skip: int = 0,
) -> None:
    """The sweep reads ``sid``'s row as it was, and ``change`` commits right after that read (after the
    first ``skip`` reads): the race between the sweep's listing and its removal, made deterministic."""
    real = store.get_sandbox
    reads: list[str] = []

    def hooked(sandbox_id: str) -> SandboxRow | None:
        row = real(sandbox_id)
        if sandbox_id == sid and len(reads) <= skip:
            reads.append(sandbox_id)
            if len(reads) == skip + 1:
                change()
        return row

    monkeypatch.setattr(store, "get_sandbox", hooked)


def test_an_orphan_sweep_removes_nothing_of_a_sandbox_that_changed_since_it_listed(
    service: SandboxService, store: EventStore, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue N: the sweep checked a sandbox's state, not its version, before removing what looked
    orphaned. A sandbox resumed and suspended again between the listing and the removal is back in the
    same state, but what was listed is no longer what is there: the removal waits for the next sweep."""
    row = service.create("data-app")
    service.suspend(row.id)
    provider.create(row.id, "data-app")  # a running instance of a suspended sandbox: looks orphaned
    listed_ref = provider.instances[row.id].ref

    def resume_and_suspend() -> None:
        service.resume(row.id)
        service.suspend(row.id)

    _changed_after_listing(store, monkeypatch, row.id, resume_and_suspend)
    report = service.reconcile()
    assert report.removed == [] and report.errors == []
    assert ("destroy", row.id) not in provider.calls
    assert service.get(row.id).state == lc.SUSPENDED
    monkeypatch.undo()
    # Unchanged since, a leftover is removed by the next sweep.
    provider.create(row.id, "data-app")
    assert listed_ref != provider.instances[row.id].ref
    assert len(service.reconcile().removed) == 1
    assert row.id not in provider.instances


def test_an_orphan_sweep_keeps_a_snapshot_the_sandbox_took_since_it_listed(
    service: SandboxService, store: EventStore, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed as unused (the sandbox is running, its snapshot spent), then the sandbox changed: the
    snapshot is left for a sweep that sees the sandbox as it is."""
    row = service.create("data-app")
    service.suspend(row.id)
    service.resume(row.id)
    stray = f"snapshots/{row.id}/99.tar.zst"
    provider.snapshots[stray] = provider.engine.root / "stray"
    # The first read is the instance sweep's (the sandbox's running instance is no orphan), the second
    # the snapshot sweep's of the checkpoint the first suspend kept (docs/checkpoints.md), the third the
    # stray's.
    kept = service.checkpoints(row.id)[0].snapshot_key
    listed = [snap.key for sid, snap in provider.list_snapshots() if sid == row.id]
    assert listed.index(kept) < listed.index(stray)
    _changed_after_listing(store, monkeypatch, row.id, lambda: service.suspend(row.id), skip=2)
    report = service.reconcile()
    assert report.removed == [] and report.errors == []
    assert stray in provider.snapshots
    monkeypatch.undo()
    assert service.reconcile().removed == [f"removed orphan snapshot {stray} of sandbox {row.id} (suspended)"]
    assert service.get(row.id).state == lc.SUSPENDED
    assert service.get(row.id).snapshot_key in provider.snapshots


def test_destroy_is_idempotent_and_removes_everything(
    service: SandboxService, provider: FakeProvider
) -> None:
    with service.turn("c", "data-app") as sbx:
        pass
    service.destroy(sbx.id)
    service.destroy(sbx.id)
    assert service.get(sbx.id).state == lc.EXPIRED
    assert provider.snapshots == {} and provider.instances == {}
    assert types(service, sbx.id).count("Destroyed") == 1


def test_verify_finds_a_tampered_read_model(service: SandboxService, store: EventStore) -> None:
    row = service.create("data-app")
    assert verify(store, POLICY) == []
    stored = store.get_sandbox(row.id)
    assert stored is not None
    store.write_projection(Projection(replace(stored, state="running"), tuple(store.all_deadlines())))
    diffs = verify(store, POLICY)
    assert diffs == [f"{row.id}: state is 'running' in the read model, 'idle' from the log"]


def test_provider_lost_on_suspend_expires(service: SandboxService, provider: FakeProvider) -> None:
    row = service.create("data-app")
    provider.instances.clear()
    with pytest.raises(SandboxExpired):
        service.suspend(row.id)
    assert service.get(row.id).expired_reason == "provider_lost"
    assert isinstance(ProviderLost("x"), ProviderError)


def test_a_vanished_instance_is_marked_lost_on_use(service: SandboxService, provider: FakeProvider) -> None:
    row = service.create("data-app")
    provider.instances.clear()  # e.g. the container was removed behind our back
    with pytest.raises(SandboxExpired, match="provider_lost"):
        service.exec(row.id, ["ls"])
    assert service.get(row.id).state == lc.EXPIRED
    assert service.history(row.id)[-1].type == "ProviderLost"


def test_a_sweep_in_the_future_keeps_history_in_order(service: SandboxService, clock: Clock) -> None:
    with service.turn("c", "data-app") as sbx:
        pass
    report = service.sweep(clock() + timedelta(days=8))
    assert report.fired == [f"{sbx.id}:retention"]
    times = [h.occurred_at for h in service.history(sbx.id)]
    assert times == sorted(times)
    assert service.history(sbx.id)[-1].type == "Destroyed"


# ------------------------------------------------------------------------------- idempotent create (G1)


@pytest.mark.parametrize("then", ["idle", "suspended", "expired"])
def test_an_idempotent_retry_returns_the_first_sandbox_unchanged(
    service: SandboxService, provider: FakeProvider, then: str
) -> None:
    first = service.create("data-app", "c", idempotency_key="K")
    if then == "suspended":
        service.suspend(first.id)
    elif then == "expired":
        service.destroy(first.id)
    before = service.get(first.id)
    calls = list(provider.calls)

    again = service.create("data-app", "c", idempotency_key="K")

    assert again == before
    # No side effect ran again: no second create, and above all no destroy of the first one.
    assert provider.calls == calls
    assert (first.id in provider.instances) == (then == "idle")


def test_an_idempotent_retry_while_the_first_is_still_creating_changes_nothing(
    service: SandboxService, store: EventStore, provider: FakeProvider, clock: Clock
) -> None:
    # The first call appended its intent and is still waiting on the provider (or died there).
    sid = SandboxService.sandbox_id_for_key("K")
    state = sb.initial(sid)
    events = sb.decide(state, sb.Create(kind="data-app", provider="fake"), clock())
    after = sb.replay(sid, events, start=state)
    store.append(sid, 0, [encode(e) for e in events], idempotency_key="K", projection=project(after, POLICY))

    again = service.create("data-app", idempotency_key="K")

    assert (again.id, again.state, again.version) == (sid, lc.CREATING, 1)
    assert provider.calls == []


# ------------------------------------------------------------------------------------------ actors


def actors(service: SandboxService, sid: str) -> list[tuple[str, str]]:
    return [(h.type, h.actor) for h in service.history(sid)]


def test_every_outcome_carries_the_actor_of_its_intent(
    service: SandboxService, provider: FakeProvider, clock: Clock
) -> None:
    row = service.create("data-app", actor="alice")
    service.suspend(row.id, actor="bob")
    service.resume(row.id, actor="carol")
    clock.advance(minutes=31)
    assert service.fire_due().fired == [f"{row.id}:idle"]
    provider.fail["resume"] = ProviderError("engine hiccup")
    with pytest.raises(ProviderError):
        service.resume(row.id, actor="dave")
    service.destroy(row.id, actor="erin")

    assert actors(service, row.id) == [
        ("CreationRequested", "alice"),
        ("Created", "alice"),
        ("SuspendRequested", "bob"),
        ("Suspended", "bob"),
        ("ResumeRequested", "carol"),
        ("Resumed", "carol"),
        ("IdleTimeoutElapsed", "scheduler"),
        ("SuspendRequested", "scheduler"),
        ("Suspended", "scheduler"),
        ("ResumeRequested", "dave"),
        ("ResumeFailed", "dave"),
        ("DestroyRequested", "erin"),
        ("Destroyed", "erin"),
    ]


def test_a_recovered_outcome_is_the_reconcilers(
    service: SandboxService, store: EventStore, clock: Clock
) -> None:
    row = service.create("data-app", actor="alice")
    state = service.load(row.id)
    events = sb.decide(state, sb.RequestSuspend(actor="bob"), clock())
    after = sb.replay(row.id, events, start=state)
    store.append(row.id, state.version, [encode(e) for e in events], projection=project(after, POLICY))
    clock.advance(minutes=11)
    assert service.sweep().recovered == [row.id]
    # The sweep claims the intent (RecoveryStarted) before it re-drives it, so no other sweep does too.
    assert actors(service, row.id)[-3:] == [
        ("SuspendRequested", "bob"),
        ("RecoveryStarted", "reconciler"),
        ("Suspended", "reconciler"),
    ]
    assert service.history(row.id)[-1].reason == "recovery"


# --------------------------------------------------------------------------------- exec str | argv


def test_exec_takes_an_argv_or_a_shell_string_in_both_places(
    service: SandboxService, provider: FakeProvider
) -> None:
    row = service.create("data-app")
    assert service.exec(row.id, ["echo", "a  b"]).stdout == "a  b\n"
    # A string is a command line for bash, with its operators and expansions.
    assert service.exec(row.id, "echo one && echo $((1 + 1))").stdout == "one\n2\n"
    with service.turn("c", "data-app") as sbx:
        assert sbx.exec("echo one; echo two >&2").stderr == "two\n"
        assert sbx.exec(("printf", "%s|", "a b", "c")).stdout == "a b|c|"


# ------------------------------------------------------------------- any exception in a side effect


@pytest.mark.parametrize(
    ("op", "back"), [("create", lc.EXPIRED), ("suspend", lc.IDLE), ("resume", lc.SUSPENDED)]
)
def test_any_exception_in_a_side_effect_records_its_outcome_and_is_one_line(
    service: SandboxService, provider: FakeProvider, op: str, back: str
) -> None:
    row = None if op == "create" else service.create("data-app")
    if op == "resume":
        assert row is not None
        service.suspend(row.id)
    provider.fail[op] = NotADirectoryError(20, "Not a directory", "/srv/snapshots")

    with pytest.raises(SideEffectFailed) as raised:
        if row is None:
            service.create("data-app")
        else:
            getattr(service, op)(row.id)

    assert isinstance(raised.value, SandboxError) and len(str(raised.value).splitlines()) == 1
    assert f"{op} failed (NotADirectoryError" in str(raised.value)
    (stored,) = service.list()
    assert stored.state == back
    assert "NotADirectoryError" in str(service.history(stored.id)[-1].data["error"])


def test_an_exception_during_destroy_leaves_a_lease_the_sweep_resolves(
    service: SandboxService, provider: FakeProvider, clock: Clock
) -> None:
    row = service.create("data-app")
    provider.fail["destroy"] = OSError(5, "Input/output error")

    with pytest.raises(SideEffectFailed, match="the sweep will finish it"):
        service.destroy(row.id)

    assert service.get(row.id).state == lc.DESTROYING
    clock.advance(minutes=11)
    assert service.sweep().recovered == [row.id]
    assert service.get(row.id).state == lc.EXPIRED and provider.instances == {}


# -------------------------------------------------------------------- another deployment's instances


def copy_sqlite(url: str, to: Path) -> str:
    """A consistent copy of a live SQLite log (WAL included), as a backup restored elsewhere would be."""
    src, dst = sqlite3.connect(url.removeprefix("sqlite:///")), sqlite3.connect(to)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return f"sqlite:///{to}"


def test_a_copied_database_never_acts_on_the_original_deployments_instances(
    clean_sqlite_url: str, tmp_path: Path, clock: Clock
) -> None:
    engine = FakeEngine(tmp_path / "engine")
    prod_provider = FakeProvider(engine, deployment="prod")
    prod = SandboxService(open_store(clean_sqlite_url), prod_provider, policy=POLICY, clock=clock)
    parked = prod.create("data-app")
    used = prod.create("data-app")
    prod.write_file(parked.id, "main.py", b"prod's work")
    # A staging stack started from a restored backup of prod's log, on the same engine.
    staging_provider = FakeProvider(engine, deployment="staging")
    staging = SandboxService(
        open_store(copy_sqlite(clean_sqlite_url, tmp_path / "copy.db")),
        staging_provider,
        policy=POLICY,
        clock=clock,
    )

    # Its idle timer comes due on prod's sandbox; its exec reaches for prod's container.
    clock.advance(minutes=31)
    with pytest.raises(ForeignSandbox):
        staging.exec(used.id, ["true"])
    report = staging.sweep()

    (error,) = report.errors
    assert parked.id in error and "another deployment" in error
    assert report.removed == []
    for sid in (parked.id, used.id):
        # The copy's record is expired with a reason of its own: no timer, no retry comes back to it.
        row = staging.get(sid)
        assert (row.state, row.expired_reason) == (lc.EXPIRED, FOREIGN)
    assert types(staging, parked.id)[-3:] == ["IdleTimeoutElapsed", "SuspendRequested", "ProviderLost"]
    assert staging.store.all_deadlines() == []
    assert staging.sweep() == SweepReport()
    # Prod's sandboxes were never touched: same records, same containers, same files.
    assert [op for op, sid in staging_provider.calls if op in ("destroy", "delete_snapshot")] == []
    assert set(prod_provider.instances) == {parked.id, used.id}
    assert prod.get(parked.id).state == lc.IDLE
    assert prod.read_file(parked.id, "main.py") == b"prod's work"
    assert verify(staging.store, POLICY) == []


def test_a_create_that_meets_another_deployments_instance_expires_and_leaves_it(
    clean_sqlite_url: str, tmp_path: Path, migrated_sqlite_template: Path, clock: Clock
) -> None:
    engine = FakeEngine(tmp_path / "engine")
    prod = SandboxService(
        open_store(clean_sqlite_url), FakeProvider(engine, deployment="prod"), policy=POLICY, clock=clock
    )
    other_db = tmp_path / "other.db"
    shutil.copyfile(migrated_sqlite_template, other_db)
    staging = SandboxService(
        open_store(f"sqlite:///{other_db}"),
        FakeProvider(engine, deployment="staging"),
        policy=POLICY,
        clock=clock,
    )
    theirs = prod.create("data-app", idempotency_key="same-key")

    with pytest.raises(ForeignSandbox):
        staging.create("data-app", idempotency_key="same-key")

    row = staging.get(theirs.id)
    assert (row.state, row.expired_reason) == (lc.EXPIRED, FOREIGN)
    assert prod.get(theirs.id).state == lc.IDLE
    assert prod.exec(theirs.id, ["echo", "still here"]).stdout == "still here\n"
    # Retrying with the same key returns the refused record; it never reaches for theirs again.
    assert staging.create("data-app", idempotency_key="same-key") == row


# ---------------------------------------------------------------------- waiting for another caller


def test_resume_of_a_live_sandbox_is_a_no_op(service: SandboxService, provider: FakeProvider) -> None:
    row = service.create("data-app")
    assert service.resume(row.id) == row
    with service.turn("c", "data-app") as sbx:
        running = service.get(sbx.id)
        assert service.resume(sbx.id) == running
    assert "resume" not in [op for op, _ in provider.calls]


def test_waiting_for_another_callers_resume_is_bounded(
    service: SandboxService, store: EventStore, clock: Clock
) -> None:
    row = service.create("data-app")
    service.suspend(row.id)
    # Another caller appended the resume intent and is still at it.
    state = service.load(row.id)
    events = sb.decide(state, sb.RequestResume(), clock())
    after = sb.replay(row.id, events, start=state)
    store.append(row.id, state.version, [encode(e) for e in events], projection=project(after, POLICY))

    with pytest.raises(SandboxBusy, match="resuming"):
        service.exec(row.id, ["true"], wait=0.3)
    # Past the lease the other caller is presumed dead: no wait at all, the sweep takes it over.
    clock.advance(minutes=11)
    with pytest.raises(SandboxBusy, match="resuming"):
        service.exec(row.id, ["true"])
    assert service.sweep().recovered == [row.id]
    assert service.exec(row.id, ["echo", "back"]).stdout == "back\n"


# ------------------------------------------------------------------------------ streaming and check


def test_exec_streams_to_callbacks_and_check_raises_command_failed(service: SandboxService) -> None:
    sid = service.create("data-app").id
    out: list[bytes] = []
    err: list[bytes] = []

    result = service.exec(
        sid, "echo one; echo two >&2; echo three", on_stdout=out.append, on_stderr=err.append
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, "one\nthree\n", "two\n")
    assert (b"".join(out), b"".join(err)) == (b"one\nthree\n", b"two\n")

    with pytest.raises(CommandFailed) as failed:
        service.exec(sid, ["sh", "-c", "echo partial; echo 'no such thing' >&2; exit 9"], check=True)
    assert isinstance(failed.value, SandboxError) and not isinstance(failed.value, ProviderError)
    assert (failed.value.exit_code, failed.value.stderr, failed.value.stdout) == (
        9,
        "no such thing\n",
        "partial\n",
    )
    assert "exited with status 9: no such thing" in str(failed.value)
    assert service.exec(sid, ["true"], check=True).exit_code == 0


def test_exec_stream_yields_chunks_then_the_result(service: SandboxService) -> None:
    sid = service.create("data-app").id

    stream = service.exec_stream(sid, ["sh", "-c", "echo a; echo b >&2; exit 4"], max_output_bytes=1)
    chunks = list(stream)

    assert b"".join(c for s, c in chunks if s == "stdout") == b"a\n"
    assert b"".join(c for s, c in chunks if s == "stderr") == b"b\n"
    # The full stream went to the iterator; the result keeps the bound.
    assert (stream.result.exit_code, stream.result.stdout_bytes, stream.result.truncated) == (4, b"a", True)


def test_exec_stream_raises_a_timeout_after_the_partial_output(service: SandboxService) -> None:
    sid = service.create("data-app").id
    got: list[tuple[str, bytes]] = []

    with (
        pytest.raises(ExecTimeout) as raised,
        service.exec_stream(sid, "echo early; sleep 5", timeout=1) as it,
    ):
        for item in it:
            got.append(item)

    assert got == [("stdout", b"early\n")]
    assert raised.value.stdout_bytes == b"early\n"


def test_a_callback_that_raises_fails_the_exec_once_it_ended(service: SandboxService) -> None:
    sid = service.create("data-app").id
    calls: list[bytes] = []

    def broken(chunk: bytes) -> None:
        calls.append(chunk)
        raise RuntimeError("consumer went away")

    with pytest.raises(RuntimeError, match="consumer went away"):
        service.exec(sid, ["sh", "-c", "echo a; sleep 0.2; echo b"], on_stdout=broken)
    assert calls == [b"a\n"]  # no further chunks after the error


def test_the_heartbeat_stops_when_the_call_returns(service: SandboxService) -> None:
    sid = service.create("data-app").id
    service.exec(sid, ["true"])
    service.write_file(sid, "f.txt", b"x")
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-") and t.is_alive()]
