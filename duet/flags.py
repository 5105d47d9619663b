"""Command-line flags bound to config fields, so that each default is written once: in the config.

``add_field(parser, "--users", "duet.generate:GeneratorConfig", "users", type=int, help="synthetic users")``
adds a flag that sets nothing unless given (``argparse.SUPPRESS``: a given value may even be None) and whose
``--help`` ends in ``(default: 2000)``, read from the field when the help is printed. The handler lays the
given flags over a config, ``configure(args, GeneratorConfig())``, or takes each bound value,
``values(args, owner)`` (the flag's if given, else the field's default). Neither the parser nor the handler
spells a default, so ``--help`` cannot disagree with what runs; ``tests/test_cli_defaults.py`` holds every
flag to this.

The owner is named ``"module:Name"``: a dataclass (its field's default), or a function (its parameter's
default) for a stage entry point that takes no config. It is imported only when help is printed or a
handler resolves it, so building the parser imports no stage. A nested config's field is a dotted path
(``"train.epochs"`` of ``PretrainConfig``). Units follow the flag's name: a number given to a
``--...-days`` flag converts to a ``timedelta`` field or to a field in seconds (named ``..._s``); a list
(``nargs``) becomes a tuple where the field holds one.

An error from below the conductor names the inputs at fault in its own words (``DuetError.fields``);
``flags_for`` finds the flags that set them, for the command line to add to the message.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

_BOUND = "bound_fields"   # the namespace's attribute: destination -> Field, for each bound flag of a command
_DAY_S = 86_400


@dataclass(frozen=True)
class Field:
    """One flag's binding: field (or parameter) ``name`` of ``owner``; ``presets`` ("module:NAME", a dict
    preset name -> field overrides, such as ``duet.generate.SETTINGS``) are shown beside the default."""

    flag: str
    owner: str
    name: str
    presets: str | None = None

    def owner_object(self) -> Any:
        return _load(self.owner)

    def default(self) -> Any:
        """The field's default, read from its owner now."""
        head, *rest = self.name.split(".")
        value = _default_of(self.owner_object(), head)
        for part in rest:
            value = getattr(value, part)
        return value

    def to_field(self, value: Any) -> Any:
        """The field's value for the flag's ``value``."""
        if self.flag.endswith("-days") and isinstance(value, int | float):
            if isinstance(self.default(), timedelta):
                return timedelta(days=value)
            if self.name.endswith("_s"):
                return value * _DAY_S
        if isinstance(self.default(), tuple):
            return tuple(value)
        return value

    def shown(self, value: Any) -> str:
        """The field's ``value`` as it is written on the command line."""
        if self.flag.endswith("-days"):
            if isinstance(value, timedelta):
                value = value.total_seconds() / _DAY_S
            elif self.name.endswith("_s"):
                value = value / _DAY_S
        if isinstance(value, tuple | list):
            return " ".join(self.shown(v) for v in value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    def __str__(self) -> str:
        """What ``--help`` shows after "default:" (argparse formats the help's ``%(field)s`` with it)."""
        text = self.shown(self.default())
        for preset, overrides in (_load(self.presets) if self.presets else {}).items():
            if self.name in overrides:
                text += f"; {preset}: {self.shown(overrides[self.name])}"
        return text


def add_field(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, owner: str, name: str, *,
              presets: str | None = None, **kwargs: Any) -> argparse.Action:
    """Add ``flag`` bound to field ``name`` of ``owner`` (see the module docstring); ``kwargs`` go to
    ``add_argument`` (type, choices, metavar, help), a default never: the field holds it."""
    field = Field(flag, owner, name, presets)
    action = parser.add_argument(flag, default=argparse.SUPPRESS, **kwargs)
    action.field = field
    action.help = f"{action.help} (default: %(field)s)" if action.help else "default: %(field)s"
    parser.set_defaults(**{_BOUND: {**(parser.get_default(_BOUND) or {}), action.dest: field}})
    return action


def configure(args: argparse.Namespace, record: Any) -> Any:
    """``record`` with each given flag bound to a field of its class laid over it (nested fields too)."""
    given = {field.name: field.to_field(getattr(args, dest)) for dest, field in _bound(args, type(record))
             if hasattr(args, dest)}
    return _replace(record, given)


def values(args: argparse.Namespace, owner: Any) -> dict[str, Any]:
    """Field name -> value for each flag bound to ``owner``: the flag's if given, else the field's default."""
    return {field.name: field.to_field(getattr(args, dest)) if hasattr(args, dest) else field.default()
            for dest, field in _bound(args, owner)}


def flags_for(parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The flags of the command ``args`` was parsed for that set the inputs ``names`` (as a ``DuetError``
    names them): a flag bound to a field of that name, or one whose destination is that name."""
    options: dict[str, str] = {}
    for command in _chosen(parser, args):
        for action in command._actions:
            field = getattr(action, "field", None)
            for key in (field.name.rsplit(".", 1)[-1] if field else None, action.dest):
                if action.option_strings and key:
                    options.setdefault(key, action.option_strings[0])
    return [options[name] for name in names if name in options]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name (empty for a parser without sub-commands)."""
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and the sub-command parsers ``args`` went through (``duet embeddings import``: three)."""
    while parser is not None:
        yield parser
        parser = next((action.choices[getattr(args, action.dest)] for action in parser._actions
                       if isinstance(action, argparse._SubParsersAction)), None)


def _bound(args: argparse.Namespace, owner: Any) -> list[tuple[str, Field]]:
    """(destination, field) of each flag of the command bound to a field of ``owner``."""
    bound = getattr(args, _BOUND, {})
    return [(dest, field) for dest, field in bound.items() if field.owner_object() is owner]


def _replace(record: Any, given: dict[str, Any]) -> Any:
    """``record`` with ``given`` (field name, or dotted path into a nested config -> value) in place."""
    flat, nested = {}, {}
    for path, value in given.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    inner = {head: _replace(getattr(record, head), fields) for head, fields in nested.items()}
    return dataclasses.replace(record, **flat, **inner) if flat or inner else record


def _default_of(owner: Any, name: str) -> Any:
    if dataclasses.is_dataclass(owner):
        field = next(f for f in dataclasses.fields(owner) if f.name == name)
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
    else:
        default = inspect.signature(owner).parameters[name].default
        if default is not inspect.Parameter.empty:
            return default
    raise TypeError(f"{owner.__name__}.{name} has no default: a required input is a required flag, not a "
                    "bound one")


def _load(reference: str) -> Any:
    """The object ``"module:Name"`` names, its module imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
