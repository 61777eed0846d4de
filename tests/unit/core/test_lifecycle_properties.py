"""Property tests over the transition table: any command sequence keeps the five invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core import timers
from sandbox_lifecycle.core.errors import CheckpointNotFound, InvalidTransition, SandboxBusy, SandboxExpired
from sandbox_lifecycle.events.codec import decode, encode
from sandbox_lifecycle.events.records import RecordedEvent

TIMEOUT = timedelta(minutes=30)
RETENTION = timedelta(days=7)
LIFETIME = timedelta(days=1)

text = st.text(min_size=1, max_size=8)
# Command class -> strategy building it.
COMMANDS: dict[type[sb.Command], st.SearchStrategy[sb.Command]] = {
    sb.Create: st.builds(
        sb.Create,
        kind=st.sampled_from(["data-app", "ai-writeback"]),
        provider=st.just("docker"),
        conversation_id=st.none() | text,
    ),
    sb.MarkReady: st.builds(sb.MarkReady, provider_ref=text),
    sb.StartTurn: st.builds(sb.StartTurn, turn_id=st.sampled_from(["t1", "t2"])),
    sb.EndTurn: st.builds(sb.EndTurn, turn_id=st.sampled_from(["t1", "t2"]), suspend=st.booleans()),
    sb.Touch: st.builds(sb.Touch, window=st.sampled_from([timedelta(0), timedelta(seconds=60)])),
    sb.RequestSuspend: st.builds(sb.RequestSuspend),
    sb.MarkSuspended: st.builds(
        sb.MarkSuspended,
        snapshot_key=st.sampled_from(["k", "k2", "k3"]),
        sha256=st.none() | st.just("ab"),
        bytes=st.none() | st.integers(0, 10**9),
        kept=st.booleans(),
    ),
    sb.Rewind: st.builds(sb.Rewind, to_version=st.integers(1, 30)),
    sb.Fork: st.builds(
        sb.Fork,
        source_id=st.just("src"),
        source_version=st.integers(1, 9),
        kind=st.just("data-app"),
        provider=st.just("docker"),
        snapshot_key=st.just("f"),
    ),
    sb.RecordFork: st.builds(sb.RecordFork, fork_id=st.just("f1"), at_version=st.integers(1, 9)),
    sb.CollectCheckpoints: st.builds(sb.CollectCheckpoints, retention=st.just(RETENTION)),
    sb.RequestResume: st.builds(sb.RequestResume),
    sb.Recover: st.builds(sb.Recover),
    sb.MarkResumed: st.builds(sb.MarkResumed, provider_ref=st.just("r2")),
    sb.FireIdleTimeout: st.builds(sb.FireIdleTimeout, timeout=st.just(TIMEOUT)),
    timers.FireRetention: st.builds(timers.FireRetention, retention=st.just(RETENTION)),
    timers.FireMaxLifetime: st.builds(timers.FireMaxLifetime, max_lifetime=st.just(LIFETIME)),
    timers.WarnExpiry: st.builds(
        timers.WarnExpiry,
        timer=st.sampled_from(["idle", "retention", "checkpoint", "max_lifetime"]),
        due_at=st.sampled_from([datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in (1, 2, 30)]),
        lead=st.sampled_from([timedelta(seconds=60), timedelta(hours=2)]),
    ),
    sb.Destroy: st.builds(sb.Destroy),
    sb.MarkDestroyed: st.builds(sb.MarkDestroyed),
    sb.MarkFailed: st.builds(sb.MarkFailed, error=st.just("boom")),
    sb.MarkLost: st.builds(sb.MarkLost, detail=st.just("gone")),
    sb.Pool: st.builds(sb.Pool),
    sb.Claim: st.builds(sb.Claim, conversation_id=text),
    sb.SetEgress: st.builds(
        sb.SetEgress, allow=st.none() | st.sampled_from([(), ("pkgs.test",), ("pkgs.test", "*.example.test")])
    ),
    sb.SetCredentials: st.builds(
        sb.SetCredentials,
        host=st.sampled_from(["api.service.test", "pkgs.test:8443"]),
        headers=st.sampled_from([(), ("Authorization",), ("Authorization", "X-Team")]),
    ),
}
commands = st.one_of(list(COMMANDS.values()))


def triggers(cls: type[sb.Command]) -> set[str]:
    return {"end_turn_suspend", "end_turn_keep_warm"} if cls is sb.EndTurn else {cls.TRIGGER}


def roundtrip(sandbox_id: str, version: int, event: sb.ev.Event) -> sb.ev.Event:
    new = encode(event)
    return decode(
        RecordedEvent(
            version,
            sandbox_id,
            version,
            new.type,
            new.schema_version,
            new.data,
            new.metadata,
            new.occurred_at,
        )
    )


class DeciderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.state = sb.initial("s1")
        self.log: list[sb.ev.Event] = []
        self.changes = 0

    @rule(seconds=st.sampled_from([1, 59, 61, 1800, 3600, 7 * 86400]))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(cmd=commands)
    def any_command(self, cmd: sb.Command) -> None:
        self.command(cmd)

    @rule(data=st.data())
    def allowed_command(self, data: st.DataObject) -> None:
        """Bias towards commands the table allows, so deep states (resuming, destroying) are reached."""
        allowed = set(lc.allowed_triggers(self.state.status)) | {
            "idle_timeout",
            "retention_elapsed",
            "max_lifetime",
        }
        if self.state.status == lc.SUSPENDED and self.state.checkpoints:
            # A rewind to a checkpoint the sandbox has, not only to random versions.
            versions = [c.version for c in self.state.checkpoints]
            self.command(sb.Rewind(to_version=data.draw(st.sampled_from(versions))))
            return
        choices = [strategy for cls, strategy in COMMANDS.items() if triggers(cls) & allowed]
        self.command(data.draw(st.one_of(choices)))

    def command(self, cmd: sb.Command) -> None:
        before = self.state
        trigger = sb.trigger_of(cmd)
        dest = lc.destination(trigger, before.status)
        try:
            events = sb.decide(before, cmd, self.now)
        except CheckpointNotFound:
            # Only a rewind to a version the state holds no checkpoint of.
            assert isinstance(cmd, sb.Rewind)
            assert cmd.to_version not in {c.version for c in before.checkpoints}
            return
        except (InvalidTransition, SandboxBusy, SandboxExpired) as exc:
            # (5) refused commands raise a typed error; only a table miss or the wrong turn may refuse.
            wrong_turn = isinstance(cmd, sb.EndTurn) and cmd.turn_id != before.turn_id
            # The pool's guards: only a sandbox without a conversation joins, only a pooled one is claimed.
            pool_guard = (
                isinstance(cmd, sb.Pool) and (before.conversation_id is not None or before.pooled)
            ) or (isinstance(cmd, sb.Claim) and not before.pooled)
            assert dest is None or wrong_turn or pool_guard, f"{trigger} from {before.status} refused: {exc}"
            if before.status == lc.EXPIRED:
                assert isinstance(exc, SandboxExpired)
            return
        after = sb.replay(before.id, events, start=before)
        # (3) one version per event, no gaps.
        assert after.version == before.version + len(events)
        if events:
            # (2) every state change is one the table allows for that trigger.
            assert dest is not None, f"{trigger} emitted events from {before.status}"
            assert after.status == dest, f"{trigger}: {before.status} -> {after.status}, table says {dest}"
            self.changes += 1
        else:
            assert after == before
        # (4) nothing leaves expired.
        if before.status == lc.EXPIRED:
            assert after.status == lc.EXPIRED
        for i, e in enumerate(events, start=before.version + 1):
            assert roundtrip(before.id, i, e) == e
        self.log.extend(events)
        self.state = after

    @invariant()
    def the_egress_policy_is_the_last_change_in_the_log(self) -> None:
        changes = [e for e in self.log if isinstance(e, sb.ev.EgressChanged)]
        last = changes[-1].allow if changes else None
        assert self.state.egress_allow == (None if last is None else tuple(last))

    @invariant()
    def a_pooled_sandbox_is_claimed_at_most_once_per_pooling(self) -> None:
        pooled = sum(isinstance(e, sb.ev.Pooled) for e in self.log)
        claimed = sum(isinstance(e, sb.ev.Claimed) for e in self.log)
        assert claimed <= pooled
        if self.state.pooled:
            assert self.state.status == lc.IDLE

    @invariant()
    def checkpoints_are_the_suspends_not_collected(self) -> None:
        """The fold's checkpoints are a subset of the suspends (and a fork's start), none collected, none
        left once expired, and the snapshot a suspended sandbox resumes from is never collected."""
        taken: set[int] = set()
        collected: set[int] = set()
        for version, e in enumerate(self.log, start=1):
            if isinstance(e, sb.ev.Suspended | sb.ev.ForkedFrom):
                taken.add(version)
            if isinstance(e, sb.ev.CheckpointCollected):
                collected.add(e.checkpoint_version)
                assert e.snapshot_key != self.state_at(version - 1).snapshot_key
        versions = {c.version for c in self.state.checkpoints}
        assert versions <= taken - collected
        if self.state.status == lc.EXPIRED:
            assert versions == set()

    @invariant()
    def a_deadline_is_warned_of_once_and_before_it_is_due(self) -> None:
        """An ExpiryWarned never repeats the deadline its timer was last warned of, and was recorded in
        its lead window, in a stable state; the state remembers the latest deadline per timer."""
        latest: dict[str, datetime] = {}
        for version, e in enumerate(self.log, start=1):
            if isinstance(e, sb.ev.ExpiryWarned):
                assert latest.get(e.timer) != e.due_at
                assert e.due_at - timedelta(milliseconds=e.lead_ms) <= e.at < e.due_at
                assert self.state_at(version - 1).status in {lc.IDLE, lc.RUNNING, lc.SUSPENDED}
                latest[e.timer] = e.due_at
        assert dict(self.state.warned) == latest

    @invariant()
    def a_lifetime_destroy_comes_only_after_the_lifetime(self) -> None:
        for e in self.log:
            if isinstance(e, sb.ev.MaxLifetimeElapsed):
                assert e.at - e.created_at >= LIFETIME
                assert e.max_lifetime_ms == LIFETIME.total_seconds() * 1000

    def state_at(self, version: int) -> sb.Sandbox:
        return sb.replay("s1", self.log[:version])

    @invariant()
    def replay_equals_live(self) -> None:
        # (1) the log alone rebuilds the live state.
        assert sb.replay("s1", self.log) == self.state


DeciderMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestDecider = DeciderMachine.TestCase


def test_the_property_suite_reaches_every_state() -> None:
    """Guard against a vacuous suite: a plain walk through the table visits every state."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    s = sb.initial("x")
    seen = {s.status}
    for cmd in [
        sb.Create(kind="data-app", provider="docker"),
        sb.MarkReady(provider_ref="r"),
        sb.StartTurn(turn_id="t"),
        sb.EndTurn(turn_id="t", suspend=True),
        sb.MarkSuspended(snapshot_key="k"),
        sb.RequestResume(),
        sb.MarkResumed(provider_ref="r2"),
        sb.Destroy(),
        sb.MarkDestroyed(),
    ]:
        s = sb.replay("x", sb.decide(s, cmd, now), start=s)
        seen.add(s.status)
    assert seen == set(lc.STATES)


def test_every_trigger_of_the_table_has_a_command_in_the_suite() -> None:
    """A new trigger without a command here would go untested by the machine above."""
    covered = set().union(*(triggers(cls) for cls in COMMANDS))
    assert {trigger for _, trigger, _ in lc.edges()} <= covered
