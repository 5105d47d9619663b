"""Every command-line default is the config's (issue 24): a flag bound to a config field
(``duet.flags.add_field``) defaults to that field, in what the handler gets and in ``--help``; a flag that
is not bound spells no default of its own, so a default can change in one place only."""

from __future__ import annotations

import argparse
import re

import pytest

from duet.cli import build_parser
from duet.flags import subcommands, values

# Flags whose default is a choice of the command line itself, not a value a config holds.
CLI_CHOICES = {
    ("generate", "--setting"): "the name of a preset of GeneratorConfig values (duet.generate.SETTINGS)",
    ("embed", "--engine"): "which implementation runs, the same EmbedConfig either way",
}
NOT_A_DEFAULT = (None, False, [])   # not given, a switch left off, a repeatable flag given no time
STATED_NUMBER = re.compile(r"default:? [-\d]")   # a help text that spells a number as the default


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name, sub-commands of sub-commands too ("embeddings import")."""
    found = {}
    for name, sub in subcommands(parser).items():
        found.update(_commands(sub, f"{prefix}{name} ") if subcommands(sub) else {f"{prefix}{name}": sub})
    return found


COMMANDS = _commands(build_parser())


def _options(command: str) -> list[argparse.Action]:
    return [a for a in COMMANDS[command]._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _minimal_argv(command: str) -> list[str]:
    """The command with its required flags only (every required flag takes text)."""
    argv = command.split()
    for action in _options(command):
        if action.required:
            count = action.nargs if isinstance(action.nargs, int) else 1
            argv += [action.option_strings[0], *["x"] * count]
    return argv


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _parsed(action: argparse.Action, text: str):
    """``text`` as the parser reads it for ``action`` (a list for a flag that takes several values)."""
    convert = action.type or str
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [convert(word) for word in text.split()]
    return convert(text)


def test_the_walk_finds_every_command():
    assert {"generate", "ingest", "sequences", "pretrain", "embed", "examples", "training-set", "evaluate",
            "serve", "embeddings import", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_bound_flags_default_to_their_field(command):
    bound = [a for a in _options(command) if getattr(a, "field", None)]
    args = build_parser().parse_args(_minimal_argv(command))
    help_text = _squeezed(COMMANDS[command].format_help())   # argparse wraps lines, at hyphens too
    wrong = []
    for action in bound:
        field, default = action.field, action.field.default()
        if action.default is not argparse.SUPPRESS:
            wrong.append(f"{field.flag}: the parser spells default {action.default!r}")
        if values(args, field.owner_object())[field.name] != default:
            wrong.append(f"{field.flag}: not given, the handler gets something else than {default!r}")
        shown = field.shown(default)
        if field.to_field(_parsed(action, shown)) != default:
            wrong.append(f"{field.flag} {shown} (what --help shows) is not {field.owner}.{field.name} = "
                         f"{default!r}")
        if action.choices is not None and default not in action.choices:
            wrong.append(f"{field.flag}: the default {default!r} is not one of its choices")
        if _squeezed(f"(default: {field})") not in help_text:
            wrong.append(f"{field.flag}: --help does not show (default: {field})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_flag_spells_a_default_of_its_own(command):
    spelled = []
    for action in _options(command):
        if getattr(action, "field", None) or (command, action.option_strings[0]) in CLI_CHOICES:
            continue
        if action.default not in NOT_A_DEFAULT:
            spelled.append(f"{action.option_strings[0]} default={action.default!r}")
        elif STATED_NUMBER.search(action.help or ""):
            spelled.append(f"{action.option_strings[0]} help={action.help!r}")
    assert not spelled, "defaults spelled in the command line instead of bound to a config field " \
                        "(duet.flags.add_field):\n" + "\n".join(spelled)
