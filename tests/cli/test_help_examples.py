"""Every command's ``--help`` ends with examples, and the ``hermes-relay`` ones parse as typed.

The command list is walked from the real parser, so a new command or subcommand without an example
fails here. The relay host's two commands (``hermes-relay-server``, ``hermes-pair``) are held to it too.
"""

from __future__ import annotations

import argparse
import io
import re
import shlex

import pytest

from hermes_relay.cli.main import build_parser
from hermes_relay.relay import main as relay_main
from hermes_relay.relay import pair_cmd

HEADING = re.compile(r"examples?( \([^)]*\))?:")  # "example:", "examples:", "examples (once):"


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path] if path else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += command_paths(child, (*path, name))
    return found


COMMANDS = command_paths(build_parser())


def examples(help_text: str) -> list[str]:
    """The indented lines of the help's example section (empty when it has none)."""
    lines = help_text.splitlines()
    start = next((i for i, line in enumerate(lines) if HEADING.fullmatch(line)), None)
    if start is None:
        return []
    section = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        section.append(line.strip())
    return section


def test_the_walk_finds_commands_and_subcommands() -> None:
    assert {("status",), ("approvals", "deny"), ("agent", "install"), ("access",), ("doctor",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_and_subcommand_help_has_examples(cli, env, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help", environ={**env, "COLUMNS": "80"})
    assert (result.code, result.err) == (0, "")
    shown = examples(result.out)
    assert shown, f"`hermes-relay {' '.join(path)} --help` has no example section"
    assert any("hermes-relay" in line for line in shown)
    for line in shown:  # each hermes-relay example parses: no misspelt subcommand, flag or choice
        words = shlex.split(line.split("  #")[0])
        if words[:1] != ["hermes-relay"]:
            continue
        build_parser(io.StringIO(), io.StringIO()).parse_known_args(words[1:])


@pytest.mark.parametrize("build", [relay_main.build_parser, pair_cmd.build_parser],
                         ids=["hermes-relay-server", "hermes-pair"])
def test_the_relay_host_commands_have_examples_that_fit_80_columns(monkeypatch, build) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    parser = build()
    text = parser.format_help()
    shown = examples(text)
    assert any(line.startswith(parser.prog) for line in shown), text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    for line in shown:
        words = shlex.split(line.split("  #")[0])
        if words[:1] == [parser.prog] and words[1:2] not in (["sessions"], ["call"]):
            parser.parse_args(words[1:])  # exits (SystemExit) on a misspelt flag or value
