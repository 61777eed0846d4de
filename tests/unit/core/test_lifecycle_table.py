"""The decider reads the transition table through an index; the transitions.Machine loaded with the same
table (the diagram's) must give the same answer for every trigger from every state."""

from __future__ import annotations

from sandbox_lifecycle.core import lifecycle as lc

TRIGGERS = sorted({row["trigger"] for row in lc.TRANSITIONS} | {"no_such_trigger"})


def test_every_destination_is_the_machines() -> None:
    machine = lc.machine()
    for state in (*lc.STATES, "no_such_state"):
        for trigger in TRIGGERS:
            found = machine.get_transitions(trigger=trigger, source=state)
            expected = None if not found else (state if found[0].dest is None else str(found[0].dest))
            assert lc.destination(trigger, state) == expected, (trigger, state)


def test_the_allowed_triggers_are_the_machines() -> None:
    for state in lc.STATES:
        assert lc.allowed_triggers(state) == tuple(sorted(lc.machine().get_triggers(state)))


def test_there_is_one_machine() -> None:
    assert lc.machine() is lc.machine()
