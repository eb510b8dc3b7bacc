"""``hermes-relay``: the command line. Parses arguments, runs one command, prints errors, exits.

This is the only place that prints errors: commands raise ``HermesError`` subclasses and ``main``
prints ``hermes-relay: <message>`` and ``  hint: <hint>`` on stderr and returns the error's exit
code (click's model, house style B5). argparse is subclassed so that usage errors take the same
path (exit 2) and every byte goes to the streams given to ``main``, which tests pass as StringIO.

Startup cost matters because ``route`` and ``prompt show`` can run on every shell prompt: nothing
here, nor any command module at import time, imports trio, the IPC client or heavy stdlib modules.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TextIO

from hermes_relay import __version__
from hermes_relay.cli import render
from hermes_relay.cli.commands import agent, demo, devices, doctor, forget, pair, pin, prompt, route, status
from hermes_relay.cli.commands import access, approvals, audit, completion
from hermes_relay.cli.context import Connect, Context
from hermes_relay.core.errors import EXIT_FAILURE, EXIT_USAGE, HermesError, UsageError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention
COMMANDS = (pair, status, devices, forget, route, prompt, agent, pin, demo, doctor, approvals, access, audit, completion)

EPILOG = """\
exit status:
  0    success
  1    failure (relay, agent or state file problem)
  2    usage: a bad argument, flag, code, URL, invite or TTL
  3    the agent is not running (with --no-autostart, or `agent status`)
  130  interrupted (Ctrl-C)

environment:
  HERMES_RELAY_URL       default relay URL for pair and devices (--remote)
  HERMES_RELAY_CODE      default pairing code for pair
  HERMES_RELAY_PAIR_QR   default invite for pair (--pair-qr)
  HERMES_HOME            instead of ~/.hermes (session store, logs)
  HERMES_RELAY_RUNTIME_DIR  where the agent socket and route indicator live
  NO_COLOR               never colour the output
"""


class _ParserExit(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def _parser_class(stdout: TextIO, stderr: TextIO) -> type[argparse.ArgumentParser]:
    class Parser(argparse.ArgumentParser):
        """Writes to our streams and raises instead of calling sys.exit."""

        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                (stderr if file is sys.stderr else stdout).write(message)

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            if message:
                stderr.write(message)
            raise _ParserExit(status)

        def error(self, message: str) -> NoReturn:
            self.print_usage(sys.stderr)
            raise UsageError(message, hint=f"see `{self.prog} --help`")

        def _get_formatter(self) -> argparse.HelpFormatter:
            # argparse's own sizing imports shutil on every add_argument (~2 ms of startup).
            return self.formatter_class(prog=self.prog, width=_help_width())

    return Parser


def _help_width() -> int:
    """What argparse would use: $COLUMNS or the terminal's width (80 without one), minus 2."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(columns - 2, 20)


def build_parser(stdout: TextIO | None = None, stderr: TextIO | None = None) -> argparse.ArgumentParser:
    parser_class = _parser_class(stdout or sys.stdout, stderr or sys.stderr)
    parser = parser_class(
        prog="hermes-relay",
        description="Pair this computer with a Hermes relay and keep it connected through a per-user agent.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hermes-relay {__version__}")
    parser.add_argument("--no-autostart", action="store_true",
                        help="never start the agent; commands that need it exit 3 instead")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON (where supported)")
    # An explicit prog keeps argparse from building a help formatter (and importing shutil) here.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", prog="hermes-relay")
    for module in COMMANDS:
        module.register(sub)
    return parser


def invoke(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    connect: Connect | None = None,
    now: Callable[[], float] | None = None,
) -> int:
    """``main`` with the seams tests need: stdin, a fake agent connection and a fixed clock."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    environ = os.environ if env is None else env
    try:
        parser = build_parser(out, err)
        args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
        if extra and not getattr(args, "accepts_extra", False):
            where = f"hermes-relay {args.command}" if getattr(args, "command", None) else "hermes-relay"
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}", hint=f"see `{where} --help`")
        args.extra = extra
        run = getattr(args, "run", None)
        if run is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        ctx = Context(
            stdout=out,
            stderr=err,
            env=environ,
            stdin=stdin if stdin is not None else sys.stdin,
            autostart=not args.no_autostart,
            style=render.Style(render.colour_enabled(out, environ)),
            connect=connect,
        )
        if now is not None:
            ctx.now = now
        return int(run(args, ctx))
    except _ParserExit as exc:
        return exc.status
    except HermesError as exc:
        return report_error(exc, err)
    except KeyboardInterrupt:
        err.write("\n")
        return EXIT_INTERRUPTED


def report_error(exc: HermesError, stderr: TextIO) -> int:
    """Print ``hermes-relay: <message>`` and the hint; return the error's exit code."""
    # Messages can carry text from the network (an HTTP body, a relay's reason): never let it drive
    # the terminal, and never let a whole HTML page through.
    stderr.write(f"hermes-relay: {_clip(render.printable(exc.message))}\n")
    if exc.hint:
        stderr.write(f"  hint: {_clip(render.printable(exc.hint))}\n")
    return int(getattr(exc, "exit_code", EXIT_FAILURE))


MAX_ERROR_CHARS = 400


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "… (cut)"


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run one ``hermes-relay`` command and return its exit status (see EPILOG)."""
    return invoke(argv, stdout=stdout, stderr=stderr, env=env)


def entry() -> NoReturn:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`hermes-relay status | head`): stop quietly, as the shell tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_FAILURE
    sys.exit(code)
