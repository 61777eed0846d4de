"""The vocabulary of `sandboxctl doctor`'s checks, shared by the doctor and the checks providers bring.

A check takes the :class:`Context` (the settings, and what earlier checks built) and returns one
:class:`Check`, or None when it does not apply here; a failing one says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox_lifecycle.adapters.composition.settings import Settings

OK, FAIL, WARN, NOT_CONFIGURED = "ok", "fail", "warn", "not configured"
_SEVERITY = {OK: 0, NOT_CONFIGURED: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


@dataclass
class Context:
    """What the checks share: settings, and what earlier checks built (so later ones can skip)."""

    settings: Settings
    store: Any = None
    provider: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


CheckFn = Callable[[Context], Check | None]  # None: the check does not apply here


def combined(name: str, parts: list[Check]) -> Check:
    """One check of several findings: the worst status, every detail, the fixes of those not OK."""
    worst = max(parts, key=lambda c: _SEVERITY[c.status]).status
    fixes = [c.fix for c in parts if c.fix and c.status != OK]
    return Check(name, worst, "; ".join(c.detail for c in parts), "; ".join(fixes) or None)
