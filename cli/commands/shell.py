"""``hermes-relay shell``: a terminal on the relay host (tmux there), riding the agent's relay link.

The command checks its input and the terminal (stdin and stdout must be ttys: exit 2), opens the
shell's own IPC connection (``shell.open``, docs/shell-protocol.md), then puts the terminal in raw mode
and runs the loop of cli/shellsession.py. The terminal is restored on every way out: the remote shell
exiting, a detach or kill, SIGTERM/SIGHUP/SIGINT (exit 128 + signo), an error, the agent gone for good.
``sessions resume NAME`` and ``sessions new`` run the same code (``open_shell``).
"""

from __future__ import annotations

import argparse
import os
import re

from ...core.errors import UsageError
from ..context import Context, add_common_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ...core.apitypes import ShellOpenParams
    from ..shellconn import ShellConnection

DEFAULT_SESSION = "main"
SESSION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EXEC = 4096  # bytes of --exec (a command line typed into the remote shell)
MAX_CONVERSATION = 256
FIRST_OPEN_WAIT = 10.0  # seconds for the agent to start and take the call
ENV_ESCAPE = "HERMES_RELAY_ESCAPE"
ENV_CLIPBOARD = "HERMES_RELAY_ALLOW_CLIPBOARD"
ENV_REPORTS = "HERMES_RELAY_ALLOW_REPORTS"

EPILOG = """\
examples:
  hermes-relay shell                      # the tmux session "main" on the default relay's host
  hermes-relay shell --session build --raw
  hermes-relay shell --remote home --exec 'htop'
  hermes-relay shell --escape ^B          # Ctrl+B . detaches instead of Ctrl+A .

keys (Ctrl+A by default; --escape or HERMES_RELAY_ESCAPE, `none` for no escape key):
  Ctrl+A .  detach (the session lives on: hermes-relay sessions resume NAME)
  Ctrl+A k  kill the session
  Ctrl+A z  suspend this client (fg resumes it)
  Ctrl+A ?  help
  Ctrl+A Ctrl+A  a literal Ctrl+A

The shell survives route changes, relay restarts and agent restarts: keys typed during a gap are sent
once the link is back, never twice. Output may not write your clipboard (OSC 52) or make your terminal
answer queries unless --allow-clipboard / --allow-reports (or HERMES_RELAY_ALLOW_CLIPBOARD=1,
HERMES_RELAY_ALLOW_REPORTS=1).

exit status: the remote shell's, 0 after a detach or kill, 1 when the session was taken over or lost,
2 without a terminal, 128+N after signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM).
"""


def register(sub: Any) -> None:
    p = sub.add_parser("shell", help="a terminal on the relay host (tmux), through the agent's link",
                       description="Open a terminal on the relay host: its tmux session NAME (default main) "
                                   "outlives this client, and the agent carries it across route changes and "
                                   "restarts.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shell_flags(p, remote_default=None)
    p.add_argument("--session", metavar="NAME", default=DEFAULT_SESSION,
                   help="the tmux session on the relay host (letters, digits, _ and -; default main)")
    p.set_defaults(run=run)


def add_shell_flags(p: argparse.ArgumentParser, *, remote_default: Any = argparse.SUPPRESS) -> None:
    p.add_argument("--remote", metavar="URL|NAME", default=remote_default,
                   help="which relay, when several are paired (env HERMES_RELAY_URL; else the default relay)")
    p.add_argument("--raw", action="store_true", help="a bare shell: do not start hermes in it")
    p.add_argument("--new", action="store_true", help="start a new Hermes conversation")
    p.add_argument("--conversation", metavar="ID", default=None, help="resume this Hermes conversation")
    p.add_argument("--exec", metavar="CMD", default=None, help="run CMD in a fresh session instead of hermes")
    p.add_argument("--escape", metavar="KEY", default=None,
                   help="the escape key: ^A (default), ^B, ..., or none (env HERMES_RELAY_ESCAPE)")
    p.add_argument("--allow-clipboard", action="store_true",
                   help="let the remote write your clipboard (OSC 52; env HERMES_RELAY_ALLOW_CLIPBOARD=1)")
    p.add_argument("--allow-reports", action="store_true",
                   help="let the remote query your terminal (DA, cursor position, colours, title; "
                        "env HERMES_RELAY_ALLOW_REPORTS=1)")
    add_common_flags(p, json=False)


def session_name(raw: str | None) -> str:
    name = DEFAULT_SESSION if raw is None else raw
    if not SESSION_NAME.fullmatch(name):
        raise UsageError(f"invalid session name {name!r}",
                         hint="use 1 to 64 letters, digits, _ or - (names with . or : do not survive the "
                              "relay's tmux naming)")
    return name


def run(args: argparse.Namespace, ctx: Context) -> int:
    return open_shell(args, ctx, session_name(args.session))


def _check_lengths(args: argparse.Namespace) -> None:
    """--exec and --conversation travel in shell.open: UTF-8 text, within the agent's frame (64 KiB)."""
    for flag, value, limit in (("--exec", args.exec, MAX_EXEC), ("--conversation", args.conversation, MAX_CONVERSATION)):
        if value is None:
            continue
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise UsageError(f"{flag} is not valid UTF-8 text", hint="check the terminal's or the script's encoding") from None
        if size > limit or "\0" in value:
            raise UsageError(f"{flag} is too long or holds a NUL byte (at most {limit} bytes)",
                             hint="put a long command in a script on the relay host and run that")


def open_shell(args: argparse.Namespace, ctx: Context, session: str) -> int:
    import sys

    from .. import escapekey

    _check_lengths(args)
    if sys.platform == "win32":
        raise UsageError("hermes-relay shell needs a POSIX terminal: it does not run on Windows yet",
                         hint="use it from WSL, or `hermes-relay sessions list|kill` from here")

    escape = escapekey.parse(args.escape if args.escape is not None else ctx.env.get(ENV_ESCAPE) or escapekey.DEFAULT)
    in_fd, out_fd = _tty_fds(ctx)
    from .. import relays

    remote = relays.resolve(ctx, getattr(args, "remote", None))
    from ...core import knobs
    from .. import shellsession, termmode
    from ..outfilter import OutputFilter

    cols, rows = termmode.window_size(out_fd)
    base: ShellOpenParams = {
        "remote": remote, "session": session, "cols": cols, "rows": rows, "term": ctx.env.get("TERM") or "xterm",
        "stream": shellsession.new_stream(), "out_seq": 0, "in_base": 0, "in_sent": 0, "unacked": b"",
        "raw": bool(args.raw), "new": bool(args.new), "conversation": args.conversation, "exec": args.exec,
        "reopen": False,
    }
    filt = OutputFilter(allow_clipboard=args.allow_clipboard or _env_on(ctx, ENV_CLIPBOARD),
                        allow_reports=args.allow_reports or _env_on(ctx, ENV_REPORTS))
    reopen = knobs.positive(knobs.read(ctx.env, knobs.CLI).get(knobs.SHELL_REOPEN)) or shellsession.REOPEN_TIMEOUT
    term = termmode.RawTerminal(in_fd, out_fd)
    session_loop = shellsession.ShellSession(base, _connector(ctx, None), term, escape=escape, filt=filt,
                                             reopen_timeout=reopen)
    first = _connector(ctx, ctx.stderr)(session_loop.open_params(reopen=False), FIRST_OPEN_WAIT)
    ctx.flush()
    try:
        term.enter()
        outcome = session_loop.run(first)
    finally:
        term.restore()  # every way out, the exception paths included (main prints the error after this)
    if outcome.message:
        ctx.err(f"hermes-relay: {outcome.message}")
    return outcome.code


def _connector(ctx: Context, stderr: Any) -> Any:
    """(params, seconds left) -> a ShellConnection: the agent (started if allowed), then shell.open."""
    def connect(params: ShellOpenParams, left: float) -> ShellConnection:
        from ..client import AUTOSTART_WAIT, ensure_agent

        client = ensure_agent(ctx.env, autostart=ctx.autostart, stderr=stderr, quiet=stderr is None,
                              wait=max(0.1, min(left, AUTOSTART_WAIT)))
        try:
            return client.shell_open(params)
        except BaseException:
            client.close()
            raise

    return connect


def _tty_fds(ctx: Context) -> tuple[int, int]:
    """stdin's and stdout's descriptors, which must both be terminals (exit 2 otherwise)."""
    fds = []
    for stream in (ctx.stdin, ctx.stdout):
        try:
            fd = stream.fileno() if stream is not None else -1
        except (AttributeError, OSError, ValueError):
            fd = -1
        fds.append(fd)
    if not all(fd >= 0 and os.isatty(fd) for fd in fds):
        raise UsageError("hermes-relay shell needs a terminal: stdin and stdout must both be ttys",
                         hint="run it in a terminal (not through a pipe); `hermes-relay sessions list` works "
                              "from scripts")
    return fds[0], fds[1]


def _env_on(ctx: Context, name: str) -> bool:
    return (ctx.env.get(name) or "").strip().lower() in ("1", "yes", "true", "on")
