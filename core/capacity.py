"""Capacity: how many sandboxes may hold compute at once (``Capacity``, the settings' value).

The ceiling itself is a rule of the log: the kernel hands the store a ``CapacityLimit`` with every
append that makes a sandbox hold compute (a create, a resume), and the store counts in the append's
own transaction, under the lock every append takes. So it holds across threads, processes and
replicas sharing one database, at every moment; nothing here keeps count in memory. The caller's side
(making room, waiting for a slot) is ``core/admission.py``.

Settings import this module for ``Capacity``: it loads neither the decider nor the event types, which a
short command (``sandboxctl ls``) has no use for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import datetime, timedelta

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.projection import SUSPEND_RETRY_AFTER
from sandbox_lifecycle.events.records import CapacityLimit, SandboxRow
from sandbox_lifecycle.events.values import FieldValues, value_class

# The reason in the history of a sandbox suspended to make room.
CAPACITY_REASON = "capacity"
_ORDER = tuple(sorted(lc.HOLDS_COMPUTE))
_WITH_REF = tuple(sorted(lc.HOLDS_COMPUTE_WITH_INSTANCE))


@value_class
class Capacity(FieldValues):
    """``SANDBOX_MAX_LIVE`` (None: no limit), the per-kind limits, ``SANDBOX_CAPACITY_WAIT_MS`` and the
    warm pool sizes (``SANDBOX_WARM_POOL_<KIND>``)."""

    max_live: int | None = None
    max_live_per_kind: Mapping[str, int] = field(default_factory=dict)
    wait: timedelta = timedelta(seconds=30)
    warm_pool: Mapping[str, int] = field(default_factory=dict)

    def limits(self, kind: str) -> tuple[CapacityLimit, ...]:
        """What an append making a ``kind`` sandbox hold compute must keep."""
        out: list[CapacityLimit] = []
        if self.max_live is not None:
            out.append(CapacityLimit(_ORDER, self.max_live, states_with_ref=_WITH_REF))
        if (per_kind := self.max_live_per_kind.get(kind)) is not None:
            out.append(CapacityLimit(_ORDER, per_kind, kind=kind, states_with_ref=_WITH_REF))
        return tuple(out)

    @property
    def bounded(self) -> bool:
        return self.max_live is not None or bool(self.max_live_per_kind)


def suspend_failed_lately(row: SandboxRow, now: datetime) -> bool:
    """Idle because its last suspend failed, less than ``SUSPEND_RETRY_AFTER`` ago.

    Every other way into idle (created, a turn's end, resumed) records activity at that moment; only a
    SuspendFailed returns a sandbox to idle without it, so an idle row whose state is younger than its
    last activity came back from a failed suspend (and a call since then makes it evictable again).
    """
    since, active = row.state_since, row.last_activity_at
    return active is not None and since > active and since > now - SUSPEND_RETRY_AFTER
