"""``hermes-relay completion bash|zsh|fish``: a shell completion script, generated from the real parser.

The script is derived at run time from ``cli.main.build_parser()``, so a new subcommand or flag is
completed without anyone editing a table. Each script walks the words already typed the same way:
options are skipped (with their value, for options that take one), and a word naming a subcommand of
the current node descends into it. The node reached decides what is offered: its options after a
``-``, otherwise its subcommands and the choices of its positional arguments. Relay URLs and names,
presets and approval ids change with the machine's state: there the script asks the program itself
(``hermes-relay __complete KIND``, cli/complete.py; where, says the table in cli/completion_scripts.py).
After any other option that takes a value, the script offers nothing (bash and zsh fall back to file names).

Reads argparse's ``_actions`` and ``_choices_actions``, as shtab and argcomplete do: they are not
public, but have been stable since argparse's first release. Plain shell only (no bash 4 associative
arrays), because macOS still ships bash 3.2.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..context import Context

SHELLS = ("bash", "zsh", "fish")  # kept in step with completion_scripts.SHELLS by a test


def register(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)",
                       description="Print a completion script for hermes-relay's commands and flags.",
                       epilog="examples (once):\n"
                              "  source <(hermes-relay completion bash)    # bash, in ~/.bashrc\n"
                              "  source <(hermes-relay completion zsh)     # zsh, in ~/.zshrc after compinit\n"
                              "  hermes-relay completion fish > ~/.config/fish/completions/hermes-relay.fish",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ..completion_scripts import script  # dataclasses & co: only for this command
    from ..main import build_parser

    ctx.stdout.write(script(args.shell, build_parser()))
    return 0
