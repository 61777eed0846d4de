"""What a sandbox used while it ran: measured by its provider when a suspend or destroy ends the run.

A provider that meters (``usage(sandbox_id, ref) -> Usage | None``, optional like ``image_version``)
is asked just before the side effect that releases the compute, while the instance still exists
(a removed container has no counters left). What it measures is recorded as a ``UsageRecorded`` event
in the same append as the outcome (``Suspended`` or ``Destroyed``), so the log never holds an outcome
whose usage was lost between two appends, nor usage of a run that did not end.

Why an event of its own rather than fields on ``Suspended``/``Destroyed``: usage is a measurement, not a
lifecycle fact, so the decider and the fold stay as they are (the fold passes it by, version only);
consumers (the relay, billing, metrics) read one event type whatever ended the run; and a run the
provider could not meter has no event rather than an outcome full of None. Old logs have none, and
replay as before.

A number the provider could not measure is None, never a made-up 0: a backend summing usage must tell
"nothing" from "not known". Nothing measured at all: no event.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.values import FieldValues, value_class

log = logging.getLogger("sandbox_lifecycle")

# The measured numbers, in the order the event and the metrics list them.
MEASURES = (
    "cpu_seconds",
    "memory_peak_bytes",
    "egress_bytes_in",
    "egress_bytes_out",
    "model_requests",
    "model_input_tokens",
    "model_output_tokens",
    "model_statuses",
)


@value_class(kw_only=True)
class Usage(FieldValues):
    """One run's usage as a provider measured it (see the ``UsageRecorded`` event for each field)."""

    since: datetime | None = None
    cpu_seconds: float | None = None
    memory_peak_bytes: int | None = None
    egress_bytes_in: int | None = None
    egress_bytes_out: int | None = None
    model_requests: int | None = None
    model_input_tokens: int | None = None
    model_output_tokens: int | None = None
    model_statuses: dict[str, int] | None = None

    @property
    def measured(self) -> bool:
        """Whether any number is known."""
        return any(getattr(self, name) is not None for name in MEASURES)

    def as_event(self, *, at: datetime, actor: str, reason: str) -> ev.UsageRecorded:
        values: dict[str, Any] = {name: getattr(self, name) for name in MEASURES}
        statuses = values["model_statuses"]
        values["model_statuses"] = None if statuses is None else dict(statuses)
        return ev.UsageRecorded(at=at, actor=actor, reason=reason, since=self.since, **values)


def measure(provider: object, sandbox_id: str, ref: str | None) -> Usage | None:
    """What the provider measured of the sandbox's running instance ``ref``; None when it has no meter,
    no instance runs, or nothing is known. Never raises: a failed measurement is logged and the
    suspend or destroy goes on (usage is worth less than releasing the compute)."""
    meter = getattr(provider, "usage", None)
    if meter is None or ref is None:
        return None
    try:
        found = meter(sandbox_id, ref)
    except Exception as exc:
        log.warning("could not measure the usage of sandbox %s: %s: %s", sandbox_id, type(exc).__name__, exc)
        return None
    return found if isinstance(found, Usage) and found.measured else None


def image_version(provider: object, kind: str) -> str | None:
    """The version of ``kind``'s image or template the provider creates sandboxes from now (None: it
    cannot say). Never raises: an unknown version only means pooled sandboxes are not compared."""
    read = getattr(provider, "image_version", None)
    if read is None:
        return None
    try:
        found = read(kind)
    except Exception as exc:
        log.warning("could not read the image version of kind %s: %s: %s", kind, type(exc).__name__, exc)
        return None
    return found if isinstance(found, str) and found else None
