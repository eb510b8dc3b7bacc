"""What every command receives: streams, the environment, the clock, colour and the agent connection.

``main`` builds one ``Context`` per invocation after parsing. Commands print through it and reach the
agent only through ``ctx.client()``, which imports the IPC client lazily (it pulls in socket,
subprocess and msgpack, which ``route`` and ``prompt`` never need). Tests build a Context with a fake
``connect`` and a fixed ``now`` instead of patching modules.
"""

from __future__ import annotations

import time

from .render import Style

TYPE_CHECKING = False  # on every command's path: argparse, typing and collections.abc load only for checkers
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from typing import Any, TextIO

    Connect = Callable[..., Any]  # (env, *, autostart: bool, stderr: TextIO) -> AgentClient


class Context:
    """Per-invocation state handed to every command's ``run(args, ctx)``."""

    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        env: Mapping[str, str],
        *,
        stdin: TextIO | None = None,
        autostart: bool = True,
        style: Style | None = None,
        now: Callable[[], float] = time.time,
        connect: Connect | None = None,
    ):
        self.stdout = stdout
        self.stderr = stderr
        self.env = env
        self.stdin = stdin
        self.autostart = autostart
        self.style = style if style is not None else Style()
        self.now = now
        self.connect = connect
        self.printed_json = False

    def client(self, *, autostart: bool | None = None) -> Any:
        """An ``AgentClient`` (use it as a context manager). Starts the agent when allowed.

        Raises AgentNotRunningError (exit 3) when the agent is down and autostart is off.
        """
        auto = self.autostart if autostart is None else autostart
        connect = self.connect
        if connect is None:
            from .client import ensure_agent

            connect = ensure_agent
        return connect(self.env, autostart=auto, stderr=self.stderr)

    def out(self, line: str = "") -> None:
        self.stdout.write(line + "\n")

    def err(self, line: str = "") -> None:
        self.stderr.write(line + "\n")

    def flush(self) -> None:
        for stream in (self.stdout, self.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    def print_json(self, obj: Any) -> None:
        import json

        self.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
        self.printed_json = True


def add_verb(verbs: Any, name: str, help: str, description: str, example: str) -> argparse.ArgumentParser:
    """A sub-subcommand whose --help says what it does and shows it used."""
    import argparse

    # The description stays one line: cli/main.py's parser wraps it to the terminal (filled here at 78
    # columns, it was wrapped twice at 80: a word alone on a line).
    return verbs.add_parser(name, help=help, description=description,
                            epilog="example:\n  " + example.replace("\n", "\n  "),
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_flags(parser: argparse.ArgumentParser, *, json: bool = True, autostart: bool = True) -> None:
    """Let ``--no-autostart`` and ``--json`` also follow the subcommand (each only where it means something).

    The defaults are SUPPRESS so a subcommand's parser never overwrites a value the top-level
    parser already set (``hermes-relay --json status`` and ``hermes-relay status --json`` agree).
    """
    import argparse

    if autostart:
        parser.add_argument("--no-autostart", action="store_true", default=argparse.SUPPRESS,
                            help="never start the agent; exit 3 if it is not running")
    if json:
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="print machine-readable JSON")
