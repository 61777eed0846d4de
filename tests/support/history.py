"""A sandbox's history as its lifecycle: the event types, without the measurements that ride along.

A provider that meters (Docker, gVisor) appends ``UsageRecorded`` after the ``Suspended`` or
``Destroyed`` that ends a run (core/usage.py); a test about the lifecycle's order compares the rest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MEASUREMENTS = frozenset({"UsageRecorded"})


def lifecycle_types(history: Iterable[Any]) -> list[str]:
    return [h.type for h in history if h.type not in MEASUREMENTS]
