"""Value semantics written once for a family of frozen dataclasses: ``==``, ``hash`` and ``repr`` from
the fields.

``dataclass()`` compiles a new ``__eq__``, ``__hash__`` and ``__repr__`` for every class (an ``exec`` of
generated source each), and the event types and the decider's commands are some forty classes that every
command imports: those methods were about half of their import time. These behave as the generated ones
do (the same fields in the same order, the same text); a family's base derives from ``FieldValues`` and
its classes are declared with ``value_class`` (below), which also makes their ``__init__`` and freezing
without generated code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar, cast, dataclass_transform, overload


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


_T = TypeVar("_T")
_MISSING = dataclasses.MISSING


@overload
def value_class(cls: type[_T], /) -> type[_T]: ...
@overload
def value_class(*, kw_only: bool = False, slots: bool = True) -> Callable[[type[_T]], type[_T]]: ...
@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def value_class(cls: type[_T] | None = None, /, *, kw_only: bool = False, slots: bool = True) -> Any:
    """A frozen dataclass of a FieldValues family, made without compiling any code at import.

    ``dataclass(frozen=True)`` execs generated source for ``__init__``, ``__setattr__`` and
    ``__delattr__`` of every class: for the sixty-odd value classes a short command imports, that was
    about 45 ms of its start-up. Here the fields are collected by ``dataclass`` (so ``fields``,
    ``replace`` and ``asdict`` work as ever), freezing is two shared functions, and ``__init__`` is
    compiled the first time the class is instantiated (the same code ``dataclass`` would write: the
    fields in order, keyword-only ones after ``*``, defaults and default factories), so a command pays
    only for the few classes it constructs. Type checkers see a frozen dataclass (PEP 681).
    """

    def wrap(c: type[_T]) -> type[_T]:
        made: Any = dataclasses.dataclass(c, init=False, eq=False, repr=False, kw_only=kw_only, slots=slots)
        made.__init__ = _init_on_first_call(made)
        made.__setattr__ = _frozen_setattr
        made.__delattr__ = _frozen_delattr
        if slots:
            # Pickling and copying restore a slotted instance through setattr, which is frozen.
            made.__getstate__ = _getstate
            made.__setstate__ = _setstate
        return cast(type[_T], made)

    return wrap if cls is None else wrap(cls)


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: object) -> list[Any]:
    return [getattr(self, f.name) for f in dataclasses.fields(self)]  # type: ignore[arg-type]


def _setstate(self: object, state: list[Any]) -> None:
    for f, value in zip(dataclasses.fields(self), state, strict=True):  # type: ignore[arg-type]
        object.__setattr__(self, f.name, value)


def _init_on_first_call(cls: Any) -> Callable[..., None]:
    """``cls``'s ``__init__`` until its first instance: compiles the class's own, installs it and runs it.

    Bound to its class (not found from the instance's type), so a subclass's own ``__init__`` calling
    this one through ``super()`` gets the base's fields, and two threads meeting the class first each
    compile the same function, either of which is kept."""

    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        init = _compile_init(cls)
        cls.__init__ = init
        init(self, *args, **kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _compile_init(cls: type) -> Callable[..., None]:
    env: dict[str, Any] = {"_set": object.__setattr__, "_MISSING": _MISSING}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        name = f.name
        if f.default is not _MISSING:
            env[f"_default_{name}"] = f.default
            param, value = f"{name}=_default_{name}", name
        elif f.default_factory is not _MISSING:
            env[f"_factory_{name}"] = f.default_factory
            param, value = f"{name}=_MISSING", f"_factory_{name}() if {name} is _MISSING else {name}"
        else:
            param, value = name, name
        (keyword if f.kw_only else positional).append(param)
        body.append(f"    _set(self, {name!r}, {value})")
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({params}) -> None:\n" + "\n".join(body or ["    pass"]), env)
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
