"""The sandbox lifecycle: states and the one transition table.

The table is data (``TRANSITIONS``). The decider asks whether a trigger is allowed and where it leads
through ``destination``, a lookup in an index of the table; the ``transitions.Machine`` loaded with the
same table (``machine()``, built on first use) gives ``edges`` and the diagram, and a test checks that
both answer alike. Every command decides, and importing and building the Machine was a noticeable
share of a short command's start-up. Nothing runs during replay; replay is a fold of events.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from transitions import Machine

NEW: Final = "new"  # the stream does not exist yet
CREATING: Final = "creating"
IDLE: Final = "idle"
RUNNING: Final = "running"
SUSPENDING: Final = "suspending"
SUSPENDED: Final = "suspended"
RESUMING: Final = "resuming"
DESTROYING: Final = "destroying"
EXPIRED: Final = "expired"

STATES: Final = (NEW, CREATING, IDLE, RUNNING, SUSPENDING, SUSPENDED, RESUMING, DESTROYING, EXPIRED)
# A side effect is in flight: the sandbox is leased to whoever appended the intent.
TRANSITIONAL: Final = frozenset({CREATING, SUSPENDING, RESUMING, DESTROYING})
# The provider holds compute for these: the idle timer is armed.
LIVE: Final = frozenset({IDLE, RUNNING})
TERMINAL: Final = frozenset({EXPIRED})
# What counts against capacity: the states in which the provider holds (or is taking or giving back)
# compute whatever the sandbox's past. Suspended and expired sandboxes hold none.
HOLDS_COMPUTE: Final = frozenset({CREATING, IDLE, RUNNING, SUSPENDING, RESUMING})
# States that hold compute only while the sandbox still has an instance (a provider ref): a destroy of
# a live sandbox removes a running container, one of a suspended sandbox only deletes its snapshot (the
# suspend removed the container, or paused the E2B sandbox, and recorded no ref). Counting the latter
# would refuse a create for compute nobody holds, and break the ceiling's own count (N+1 "live").
HOLDS_COMPUTE_WITH_INSTANCE: Final = frozenset({DESTROYING})


def holds_compute(state: str, provider_ref: str | None) -> bool:
    """Whether a sandbox in ``state`` with this provider ref counts against capacity (the stores count
    the same rows in the append's transaction; see ``CapacityLimit``)."""
    return state in HOLDS_COMPUTE or (state in HOLDS_COMPUTE_WITH_INSTANCE and provider_ref is not None)


_ALIVE = [CREATING, IDLE, RUNNING, SUSPENDING, SUSPENDED, RESUMING, DESTROYING]

TRANSITIONS: Final[list[dict[str, Any]]] = [
    {"trigger": "create", "source": NEW, "dest": CREATING},
    {"trigger": "mark_ready", "source": CREATING, "dest": IDLE},
    {"trigger": "start_turn", "source": IDLE, "dest": RUNNING},
    {"trigger": "end_turn_keep_warm", "source": RUNNING, "dest": IDLE},
    {"trigger": "end_turn_suspend", "source": RUNNING, "dest": SUSPENDING},
    {"trigger": "touch", "source": [IDLE, RUNNING], "dest": "="},
    # Warm pool: an idle sandbox with no conversation joins its kind's pool; a new conversation's
    # turn claims it (still idle, then starts its turn as on any other).
    {"trigger": "pool", "source": IDLE, "dest": "="},
    {"trigger": "claim", "source": IDLE, "dest": "="},
    # The network policy changes in place; a suspended sandbox gets it when it resumes.
    {"trigger": "set_egress", "source": [IDLE, RUNNING, SUSPENDED], "dest": "="},
    {"trigger": "set_credentials", "source": [IDLE, RUNNING, SUSPENDED], "dest": "="},
    {"trigger": "request_suspend", "source": [IDLE, RUNNING], "dest": SUSPENDING},
    {"trigger": "idle_timeout", "source": [IDLE, RUNNING], "dest": SUSPENDING},
    {"trigger": "mark_suspended", "source": SUSPENDING, "dest": SUSPENDED},
    {"trigger": "request_resume", "source": SUSPENDED, "dest": RESUMING},
    {"trigger": "mark_resumed", "source": RESUMING, "dest": IDLE},
    {"trigger": "retention_elapsed", "source": SUSPENDED, "dest": DESTROYING},
    {"trigger": "destroy", "source": [IDLE, RUNNING, SUSPENDED], "dest": DESTROYING},
    # SANDBOX_MAX_LIFETIME_MS: destroyed whatever its activity, from any stable state (docs/lifecycle.md).
    {"trigger": "max_lifetime", "source": [IDLE, RUNNING, SUSPENDED], "dest": DESTROYING},
    # A warning that a timer will act soon (ExpiryWarned): a fact on the feed, the state unchanged.
    {"trigger": "warn_expiry", "source": [IDLE, RUNNING, SUSPENDED], "dest": "="},
    {"trigger": "mark_destroyed", "source": DESTROYING, "dest": EXPIRED},
    # A failed side effect returns to the stable state it started from; a failed create has
    # nothing to return to.
    {"trigger": "mark_failed", "source": CREATING, "dest": EXPIRED},
    {"trigger": "mark_failed", "source": SUSPENDING, "dest": IDLE},
    {"trigger": "mark_failed", "source": RESUMING, "dest": SUSPENDED},
    {"trigger": "mark_lost", "source": _ALIVE, "dest": EXPIRED},
    # Checkpoints (docs/checkpoints.md). A rewind points a suspended sandbox's next resume at an earlier
    # checkpoint; a fork starts a new stream suspended on a copy of one; the source records the fork, and
    # retention collects old checkpoints, only in a stable state (an append while a side effect is in
    # flight would make its outcome lose the race).
    {"trigger": "rewind", "source": SUSPENDED, "dest": "="},
    {"trigger": "fork", "source": NEW, "dest": SUSPENDED},
    {"trigger": "record_fork", "source": [IDLE, RUNNING, SUSPENDED], "dest": "="},
    {"trigger": "collect_checkpoint", "source": [IDLE, RUNNING, SUSPENDED], "dest": "="},
    # A sweep taking over an intent past its lease: same state, the lease restarted (RecoveryStarted).
    {"trigger": "recover", "source": sorted(TRANSITIONAL), "dest": "="},
]


def _index(table: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """source -> trigger -> dest, "=" resolved to the source; the first row for a pair wins, as in the
    Machine."""
    out: dict[str, dict[str, str]] = {}
    for row in table:
        sources = [row["source"]] if isinstance(row["source"], str) else row["source"]
        for source in sources:
            out.setdefault(source, {}).setdefault(
                row["trigger"], source if row["dest"] == "=" else row["dest"]
            )
    return out


_DESTINATIONS: Final = _index(TRANSITIONS)


@functools.cache
def machine() -> Machine:
    """The table loaded into one ``transitions.Machine`` with no model (never one per sandbox)."""
    # why here: measured in a short command's start-up (tests/**/test_imports.py)
    from transitions import Machine

    return Machine(
        model=None,
        states=list(STATES),
        transitions=TRANSITIONS,
        initial=NEW,
        auto_transitions=False,
        send_event=False,
    )


def destination(trigger: str, state: str) -> str | None:
    """Where ``trigger`` leads from ``state``, or None when the table does not allow it."""
    return _DESTINATIONS.get(state, {}).get(trigger)


def allowed_triggers(state: str) -> tuple[str, ...]:
    return tuple(sorted(_DESTINATIONS.get(state, {})))


def edges() -> list[tuple[str, str, str]]:
    """Every (source, trigger, dest) of the Machine, for property tests and docs."""
    out: list[tuple[str, str, str]] = []
    for trigger, event in machine().events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                out.append((source, trigger, source if t.dest is None else str(t.dest)))
    return sorted(out)


def mermaid() -> str:
    """The table as a Mermaid state diagram (drawn by transitions' GraphMachine)."""
    from transitions.extensions import GraphMachine  # why here: only the docs draw the diagram

    class _Canvas:
        pass

    graph = GraphMachine(
        model=None,
        states=list(STATES),
        transitions=TRANSITIONS,
        initial=NEW,
        auto_transitions=False,
        graph_engine="mermaid",
        title="Sandbox lifecycle",
        show_state_attributes=False,
    )
    canvas = _Canvas()
    graph.add_model(canvas)
    return str(canvas.get_graph().draw(None))  # type: ignore[attr-defined]
