"""The event types and the decider's commands share ==, hash and repr (events/values.py) instead of
having dataclass() generate them per class: they must behave exactly as the generated ones would."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.events import types as ev

FAMILIES = [
    *ev.EVENT_TYPES.values(),
    *(
        cls
        for cls in vars(sb).values()
        if isinstance(cls, type) and issubclass(cls, sb.Command) and cls is not sb.Command
    ),
]
AT = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def sample(hint: Any, variant: int) -> Any:
    """A value of the field's type; ``variant`` picks another one."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = typing.get_origin(args[0]) or args[0]
    if kind is datetime:
        return AT + timedelta(seconds=variant)
    if kind is timedelta:
        return timedelta(minutes=1 + variant)
    if kind is bool:
        return bool(variant)
    if kind is int:
        return 7 + variant
    if kind is list:
        return [{"id": f"p{variant}", "command": ["sleep", "1"]}]
    return f"value-{variant}"


def twin(cls: type) -> type:
    """The same fields as a dataclass with generated ==, hash and repr."""
    hints = typing.get_type_hints(cls)
    return dataclasses.make_dataclass(
        cls.__name__,
        [(f.name, hints[f.name]) for f in dataclasses.fields(cls)],
        frozen=True,
        kw_only=True,
    )


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.__name__)
def test_equality_hash_and_repr_are_a_dataclasss(cls: type) -> None:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {n: sample(hints[n], 0) for n in names}
    other = {n: sample(hints[n], 1) for n in names}
    ours, generated = cls(**values), twin(cls)(**values)
    assert repr(ours) == repr(generated)
    assert ours == cls(**values)
    assert ours.__eq__(generated) is NotImplemented and ours != generated
    for name in names:  # each field takes part in ==
        assert ours != cls(**{**values, name: other[name]}), name
    try:
        expected = hash(generated)
    except TypeError:  # a list among the fields: unhashable either way
        with pytest.raises(TypeError):
            hash(ours)
    else:
        assert hash(ours) == expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours.actor = "someone else"  # type: ignore[misc]
