"""Value semantics written once for a family of frozen dataclasses: ``==``, ``hash`` and ``repr`` from
the fields.

``dataclass()`` compiles a new ``__eq__``, ``__hash__`` and ``__repr__`` for every class (an ``exec`` of
generated source each), and the event types and the decider's commands are some forty classes that every
command imports: those methods were about half of their import time. These behave as the generated ones
do (the same fields in the same order, the same text); a family's base derives from ``FieldValues`` and
its classes are declared with ``eq=False, repr=False``, so that these are the ones used.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


class FieldValues:
    __slots__ = ()

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        # As a dataclass's: equal to an instance of the same class only, field by field.
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        # As a frozen dataclass's: the hash of the compared fields (a list among them is unhashable).
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{type(self).__qualname__}({shown})"
