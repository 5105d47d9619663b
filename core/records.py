"""Typed records to and from plain JSON data: the one ``to_dict`` / ``from_dict`` of the project.

Configs (saved beside a checkpoint, given as a ``--config`` file) and stage results (recorded by the
demo's stage cache, written into ``demo.json``) are frozen dataclasses. ``to_dict`` turns one into JSON-able
data: nested dataclasses into mappings, tuples into lists, ``datetime`` into ISO-8601 text, ``timedelta``
into seconds. ``from_dict`` rebuilds it from its field types, recursively (dataclasses, ``tuple[X, ...]``,
``list[X]``, ``dict[str, X]``, ``X | None``, ``datetime``, ``timedelta``, the plain scalars), and refuses
what it cannot be sure of: an unknown key, a value of the wrong type (``"heads": "4"``, a bool for an int),
each named in a ``DuetError``. Missing keys take the field defaults. An integer is accepted where a float
is expected (JSON writes ``0.0`` as is, a person may write ``0``) and kept as given. A field typed ``dict``
or ``Any`` is taken as is.

Two ways a record keeps the layout its readers know:

* a field made by ``optional_key()`` is a part a document may lack: None, and then ``to_dict`` leaves its
  key out rather than writing null (``from_dict`` gives a missing one None);
* a dataclass with its own ``to_dict`` and ``from_dict`` (a classmethod), such as ``ranker.splits.Splits``,
  is written and read by them wherever it is nested in another record.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from core.errors import DuetError

C = TypeVar("C")


_OPTIONAL_KEY = "core.records: optional key"


def optional_key() -> Any:
    """A field for a part a document may lack: None by default, its key left out of ``to_dict`` when None."""
    return dataclasses.field(default=None, metadata={_OPTIONAL_KEY: True})


def to_dict(record: Any) -> dict[str, Any]:
    """A dataclass instance as plain JSON-able data (field order kept)."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"to_dict takes a dataclass instance, not {type(record).__name__}")
    values = ((f, getattr(record, f.name)) for f in dataclasses.fields(record))
    return {f.name: plain(v) for f, v in values if not (v is None and f.metadata.get(_OPTIONAL_KEY))}


def _own_layout(kind: type) -> bool:
    """Whether a dataclass writes and reads itself (its own ``to_dict`` and classmethod ``from_dict``)."""
    return callable(getattr(kind, "to_dict", None)) and callable(getattr(kind, "from_dict", None))


def plain(value: Any) -> Any:
    """Any value ``to_dict`` may meet (a record, a list of them, a time, a mapping) as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if _own_layout(type(value)) else to_dict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build dataclass ``cls`` from ``data`` (what ``to_dict`` wrote, or a person's JSON)."""
    if not isinstance(data, Mapping):
        raise DuetError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise DuetError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _typed(hints[name], value, f"{cls.__name__}: {name}")
                  for name, value in data.items()})


def _typed(kind: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _typed(options[0], value, where)
        for option in options:   # e.g. int | str: the first that takes the value
            try:
                return _typed(option, value, where)
            except DuetError:
                continue
        raise DuetError(f"{where} must be one of {', '.join(_name(o) for o in options)}, got {value!r}")
    if kind is Any or kind is object or kind is dict or kind is list:
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise DuetError(f"{where} must be a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple:
            if args and len(args) != len(value):
                raise DuetError(f"{where} must have {len(args)} items, got {value!r}")
            return tuple(_typed(a, v, f"{where}[{i}]") if args else v
                         for i, (a, v) in enumerate(zip(args or [Any] * len(value), value, strict=True)))
        return [_typed(args[0], v, f"{where}[{i}]") if args else v for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise DuetError(f"{where} must be a mapping, got {value!r}")
        keys, values = args or (Any, Any)
        return {_typed(keys, k, where): _typed(values, v, f"{where}[{k!r}]") for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):   # named by the outer key: "PretrainConfig: model must be ..."
            raise DuetError(f"{where} must be a mapping, got {value!r}")
        return kind.from_dict(value) if _own_layout(kind) else from_dict(kind, value)
    if kind is datetime:
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise DuetError(f"{where} must be an ISO-8601 time, got {value!r}")
        try:
            return datetime.fromisoformat(value)
        except ValueError as e:
            raise DuetError(f"{where} must be an ISO-8601 time, got {value!r}") from e
    if kind is timedelta:
        if isinstance(value, timedelta):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DuetError(f"{where} must be a number of seconds, got {value!r}")
        return timedelta(seconds=value)
    checks = {bool: (lambda v: isinstance(v, bool), "true or false"),
              int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
              str: (lambda v: isinstance(v, str), "a string")}
    if kind in checks:
        ok, expected = checks[kind]
        if not ok(value):
            raise DuetError(f"{where} must be {expected}, got {value!r}")
    return value


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))
