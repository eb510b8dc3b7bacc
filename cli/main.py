"""``hermes-relay``: the command line. Finds the command, runs it, prints errors, exits.

This is the only place that prints errors: commands raise ``HermesError`` subclasses and ``main``
prints ``hermes-relay: <message>`` and ``  hint: <hint>`` on stderr (with ``--json``: one JSON
object ``{"ok": false, "error": {code, message, hint}}`` on stdout) and returns the error's exit
code (click's model, house style B5). argparse is subclassed so that usage errors take the same
path (exit 2) and every byte goes to the streams given to ``main``, which tests pass as StringIO.

Start-up cost matters because ``status`` and ``route`` run from scripts, status bars and prompts:
- ``COMMANDS`` names each command's module; only the invoked command's module is imported and only
  its parser is built (the full parser is built for ``--help``, completion and mistakes).
- ``status`` and ``route`` with their plain flags skip argparse altogether (``HOT``): argparse
  pulls in re and gettext, more than the rest of ``route`` costs.
- Nothing here imports trio, the IPC client, pathlib, typing or json at module level.
"""

from __future__ import annotations

import os
import sys

from .. import __version__
from ..core.errors import EXIT_FAILURE, EXIT_USAGE, HermesError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from types import ModuleType
    from typing import Any, NoReturn, TextIO

    from .context import Connect

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention

# Every command: name -> module under hermes_relay.cli.commands (each has register(sub) and run(args, ctx)).
# The order is the order of `hermes-relay --help`.
COMMANDS: dict[str, str] = {
    "pair": "pair",
    "status": "status",
    "devices": "devices",
    "route": "route",
    "prompt": "prompt",
    "agent": "agent",
    "pin": "pin",
    "demo": "demo",
    "doctor": "doctor",
    "forget": "forget",
    "restore": "restore",
    "down": "down",
    "up": "up",
    "hosts": "hosts",
    "use": "use",
    "rename": "rename",
    "approvals": "approvals",
    "access": "access",
    "audit": "audit",
    "shell": "shell",
    "sessions": "sessions",
    "completion": "completion",
}

# Commands dispatched without argparse when every argument is one of these flags.
HOT: dict[str, frozenset[str]] = {
    "status": frozenset({"--json", "--no-autostart", "--reveal-tokens"}),
    "route": frozenset({"--json", "--no-autostart"}),
}
GLOBAL_FLAGS = frozenset({"--json", "--no-autostart"})

EPILOG = """\
exit status:
  0    success
  1    failure (relay, agent or state file problem)
  2    usage: a bad argument, flag, code, URL, invite or TTL
  3    the agent is not running (with --no-autostart, or `agent status`)
  130  interrupted (Ctrl-C)

--no-autostart never starts the agent: the commands that need it exit 3 when it is not running \
(pair, devices, approvals, pin, forget, restore, hosts test, down, up, shell, sessions), and so do status and route, \
after printing what the files say. audit, access, hosts, use, rename, prompt and completion read or \
write files and never need the agent; doctor runs the route checks itself. An agent a command \
started stops again within a minute when nothing is paired.

environment:
  HERMES_RELAY_URL       default relay URL or name for pair and devices (--remote);
                         else the default relay (`hermes-relay use`)
  HERMES_RELAY_CODE      default pairing code for pair
  HERMES_RELAY_PAIR_QR   default invite for pair (--pair-qr)
  HERMES_HOME            instead of ~/.hermes (session store, logs)
  HERMES_RELAY_RUNTIME_DIR  where the agent socket and route indicator live
  HERMES_RELAY_NOTIFY=0  no desktop notification for a call waiting for approval (the agent's
                         environment; see `hermes-relay doctor`)
  HERMES_RELAY_ESCAPE    the shell's escape key (^A by default, none for none)
  NO_COLOR               never colour the output

with --json, a failure prints {"ok": false, "error": {"code", "message", "hint"}} on stdout
(the exit status is the same).
"""


class _ParserExit(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class Args:
    """The parsed arguments of a hot command (what argparse's Namespace would hold)."""

    def __init__(self, **values: Any):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Args({self.__dict__!r})"


def command_module(name: str) -> ModuleType:
    module = f"hermes_relay.cli.commands.{COMMANDS[name]}"
    __import__(module)  # importlib itself would cost every run ~1 ms
    return sys.modules[module]


def _parser_class(stdout: TextIO, stderr: TextIO) -> type[argparse.ArgumentParser]:
    import argparse

    from ..core.cliargs import DashPositionalsMixin

    class Parser(DashPositionalsMixin, argparse.ArgumentParser):
        """Writes to our streams and raises instead of calling sys.exit; see DashPositionalsMixin.

        One wrapping style: a long one-line paragraph of a description or epilog is wrapped to the
        help width, whatever formatter the command chose; indented lines (examples) are kept as typed.
        """

        def format_help(self) -> str:
            self.description, self.epilog = _wrap_prose(self.description), _wrap_prose(self.epilog)
            return super().format_help()

        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                (stderr if file is sys.stderr else stdout).write(message)

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            if message:
                stderr.write(message)
            raise _ParserExit(status)

        def error(self, message: str) -> NoReturn:
            self.print_usage(sys.stderr)
            hint = f"see `{self.prog} --help`"
            suggestion = _suggest_choice(message)
            if suggestion:
                hint = f"did you mean `{self.prog} {suggestion}`? {hint}"
            raise UsageError(message, hint=hint)

        def _get_formatter(self) -> argparse.HelpFormatter:
            # argparse's own sizing imports shutil on every add_argument (~2 ms of startup).
            return self.formatter_class(prog=self.prog, width=_help_width())  # type: ignore[call-arg]  # stub omits width

    return Parser


def _wrap_prose(text: str | None) -> str | None:
    """Wrap each unindented line longer than the help width; keep short and indented lines as they are."""
    width = _help_width() - 2
    if not text or all(len(line) <= width for line in text.splitlines()):
        return text
    import textwrap

    lines: list[str] = []
    for line in text.splitlines():
        if len(line) <= width or line.startswith(" "):
            lines.append(line)
        else:
            lines.extend(textwrap.wrap(line, width, break_on_hyphens=False, break_long_words=False))
    return "\n".join(lines)


def _suggest_choice(message: str) -> str | None:
    """The closest valid choice named in argparse's "invalid choice: 'x' (choose from ...)" message.

    Quotes around the names vary between Python versions, so they are stripped, not required.
    """
    import re

    found = re.search(r"invalid choice: '?(.*?)'? \(choose from (.*)\)", message)
    if not found:
        return None
    choices = [choice.strip().strip("'\"") for choice in found.group(2).split(",")]
    return _closest(found.group(1), choices)


def _closest(word: str, choices: Sequence[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


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


def build_parser(stdout: TextIO | None = None, stderr: TextIO | None = None, *,
                 only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` of that one command (what a normal run needs)."""
    import argparse

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
    for name in COMMANDS if only is None else (only,):
        command_module(name).register(sub)
    return parser


def split_command(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """(command word, global flags before it, arguments after it); command None when there is none."""
    flags: list[str] = []
    for i, arg in enumerate(argv):
        if arg in GLOBAL_FLAGS:
            flags.append(arg)
            continue
        if arg.startswith("-"):
            return None, flags, list(argv[i:])
        return arg, flags, list(argv[i + 1:])
    return None, flags, []


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in (argv[: list(argv).index("--")] if "--" in argv else argv)


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
    words = list(sys.argv[1:] if argv is None else argv)
    ctx = None
    try:
        if words and words[0] == "--version" and len(words) == 1:
            return _print_version(out, environ, connect)
        if words and words[0] == "__complete":  # hidden: what the completion scripts ask for on Tab
            from . import complete

            return complete.run(words[1:], out, environ, connect)
        args, run = _parse(words, out, err)
        if run is None:
            return EXIT_USAGE
        from . import render
        from .context import Context

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
        # A command that already printed its JSON document carries the error inside it.
        if _wants_json(words) and not (ctx is not None and ctx.printed_json):
            return report_error_json(exc, out)
        return report_error(exc, err)
    except KeyboardInterrupt:
        err.write("\n")
        return EXIT_INTERRUPTED


def _print_version(out: TextIO, env: Mapping[str, str], connect: Any) -> int:
    """``hermes-relay X`` and the running agent's version (never starts one: a version is a question)."""
    out.write(f"hermes-relay {__version__}\n")
    try:
        if connect is None:
            from .client import ensure_agent as connect
        with connect(env, autostart=False, stderr=None) as client:
            hello = client.hello
        agent = f"agent {hello.get('agent_version', '?')} (pid {hello.get('pid', '?')})"
        if hello.get("agent_version") != __version__:
            agent += ": not this CLI's version; `hermes-relay agent restart` runs this one"
    except HermesError:
        agent = "agent not running"
    out.write(agent + "\n")
    return 0


def _parse(words: list[str], out: TextIO, err: TextIO) -> tuple[Any, Callable[..., int] | None]:
    """(args, the command's run function); run is None after printing help for a bare invocation."""
    command, flags, rest = split_command(words)
    hot = HOT.get(command or "")
    if hot is not None and all(arg in hot for arg in rest):
        given = set(flags) | set(rest)
        hot_args = Args(command=command, json="--json" in given, no_autostart="--no-autostart" in given,
                        reveal_tokens="--reveal-tokens" in given, extra=[])
        return hot_args, command_module(command).run  # type: ignore[arg-type]
    if command is not None and command not in COMMANDS:
        suggestion = _closest(command, list(COMMANDS))
        hint = "see `hermes-relay --help`"
        if suggestion:
            hint = f"did you mean `hermes-relay {suggestion}`? {hint}"
        raise UsageError(f"unknown command {command!r}", hint=hint)
    parser = build_parser(out, err, only=command)
    args, extra = parser.parse_known_args(words)
    if extra and not getattr(args, "accepts_extra", False):
        where = f"hermes-relay {args.command}" if getattr(args, "command", None) else "hermes-relay"
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}", hint=f"see `{where} --help`")
    args.extra = extra
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
    return args, run


def report_error(exc: HermesError, stderr: TextIO) -> int:
    """Print ``hermes-relay: <message>`` and the hint; return the error's exit code."""
    from . import render

    # Messages can carry text from the network (an HTTP body, a relay's reason): never let it drive
    # the terminal, and never let a whole HTML page through.
    stderr.write(f"hermes-relay: {_clip(render.printable(exc.message))}\n")
    if exc.hint:
        stderr.write(f"  hint: {_clip(render.printable(exc.hint))}\n")
    return int(getattr(exc, "exit_code", EXIT_FAILURE))


def report_error_json(exc: HermesError, stdout: TextIO) -> int:
    """Print ``{"ok": false, "error": {code, message, hint}}`` on stdout; return the error's exit code."""
    import json

    error = {"code": exc.code, "message": _clip(exc.message), "hint": _clip(exc.hint) if exc.hint else None}
    stdout.write(json.dumps({"ok": False, "error": error}, indent=2, ensure_ascii=False) + "\n")
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
