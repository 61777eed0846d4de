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
from sandbox_lifecycle.events.values import FieldValues, value_class

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


def _same_as_generated(obj: Any) -> None:
    cls = type(obj)
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    generated = dataclasses.make_dataclass(
        cls.__name__, [(f.name, Any) for f in dataclasses.fields(obj)], frozen=True
    )(**values)
    # The generated class has no repr=False fields: compare the text of those shown.
    shown = [f.name for f in dataclasses.fields(obj) if f.repr]
    expected = f"{cls.__qualname__}(" + ", ".join(f"{n}={values[n]!r}" for n in shown) + ")"
    assert repr(obj) == expected
    assert obj == cls(**values) and obj.__eq__(generated) is NotImplemented
    try:
        expected_hash = hash(generated)
    except TypeError:
        with pytest.raises(TypeError):
            hash(obj)
    else:
        assert hash(obj) == expected_hash


def test_the_records_of_the_ports_settings_and_policy_are_values_too(tmp_path: Any) -> None:
    from sandbox_lifecycle.adapters.composition.settings import Settings
    from sandbox_lifecycle.core.capacity import Capacity
    from sandbox_lifecycle.core.kinds import KINDS
    from sandbox_lifecycle.core.ports import ExecResult, ProviderCapabilities, SnapshotInfo
    from sandbox_lifecycle.core.projection import Policy

    settings = Settings.from_env(
        {"SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_DATABASE_URL": "sqlite:///x.db"}
    )
    for obj in (
        *KINDS.values(),
        Policy(),
        Capacity(),
        SnapshotInfo("snapshots/a/1.tar.zst", "ab" * 32, 10),
        ProviderCapabilities(isolation="vm", pause_keeps_processes=True, egress_allow_list=True, ports=True),
        ExecResult(0, b"out", b"err"),
        settings,
        settings.provider_settings["e2b"],
        settings.provider_settings["docker"].egress,
    ):
        _same_as_generated(obj)
    assert "sqlite:///x.db" not in repr(settings)  # a field kept out of repr stays out


# --- value_class: a frozen dataclass made without compiling code at import ----------------------------


@value_class
class _Point(FieldValues):
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


@value_class(kw_only=True)
class _Labelled(_Point):
    label: str
    weight: float = 1.0


class _Custom(_Point):
    """Not decorated, with an __init__ of its own that calls the value class's."""

    def __init__(self, x: int) -> None:
        super().__init__(x, y=x * 2)


def test_a_value_class_constructs_like_the_dataclass_it_declares() -> None:
    p = _Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, [])
    assert _Point(1, 2, ["a"]) == _Point(x=1, y=2, tags=["a"])
    assert _Point(1).tags is not _Point(1).tags  # a factory per instance, never a shared default
    labelled = _Labelled(3, 4, label="l")
    assert (labelled.x, labelled.y, labelled.label, labelled.weight) == (3, 4, "l", 1.0)
    with pytest.raises(TypeError):
        _Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Point(1, 2, [], 4)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Labelled(1, 2, [], "positional")  # type: ignore[misc]
    with pytest.raises(TypeError):
        _Point(1, colour="red")  # type: ignore[call-arg]
    assert [f.name for f in dataclasses.fields(_Labelled)] == ["x", "y", "tags", "label", "weight"]
    assert dataclasses.replace(p, y=5) == _Point(1, 5)


def test_a_value_class_is_frozen_and_survives_pickle_and_copy() -> None:
    import copy
    import pickle

    p = _Labelled(1, label="l")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.label  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(p)) == p
    assert copy.copy(p) == p and copy.deepcopy(p) == p
    assert not hasattr(p, "__dict__")  # slotted, as before


def test_a_subclass_init_calling_the_value_class_init_keeps_its_own() -> None:
    first = _Custom(2)
    assert (first.x, first.y) == (2, 4)
    assert _Custom(3).y == 6  # the subclass's __init__ was not replaced by the compiled one
    assert _Point(5).y == 0


def test_threads_meeting_a_value_class_first_each_construct_it() -> None:
    """The first instance compiles the class's __init__; threads racing to it must all get theirs, of
    the right class (not a base's __init__ found after another thread installed the class's own)."""
    import sys

    failures: list[BaseException] = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave at every few bytecodes: the race shows if it exists
    try:
        _race_rounds(failures)
    finally:
        sys.setswitchinterval(switch)
    assert failures == []


def _race_rounds(failures: list[BaseException]) -> None:
    import threading

    for round_ in range(40):  # bounded: each round is a fresh class met first by 8 threads at once

        @value_class(kw_only=True)
        class Base(FieldValues):
            actor: str = "api"

        @value_class(kw_only=True)
        class Leaf(Base):
            name: str
            count: int = 0

        barrier = threading.Barrier(8)

        def construct(cls: type[Leaf] = Leaf, n: int = round_, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=10)
            try:
                leaf = cls(name=f"n{n}", count=n)
                assert (leaf.name, leaf.count, leaf.actor) == (f"n{n}", n, "api")
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=construct) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
