"""``hermes-relay sessions``: the terminal sessions on the relay host (list, resume, new, kill).

``list`` and ``kill`` go over the agent's link (IPC ``terminal.list``/``terminal.kill``: no socket to
the relay per command); ``resume NAME`` and ``new [NAME]`` check the list, then run the shell
(cli/commands/shell.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from ...core.errors import NotFoundError, TerminalRefusedError, UsageError
from ..context import Context, add_common_flags, add_verb
from ..render import NONE_MARK
from .shell import add_shell_flags, open_shell, session_name

HEADERS = ("NAME", "ATTACHED", "WINDOWS", "CREATED", "STATE")


def register(sub: Any) -> None:
    p = sub.add_parser("sessions", help="the terminal sessions on the relay host: list, resume, new, kill",
                       description="The tmux sessions `hermes-relay shell` opens on the relay host live on "
                                   "after the client leaves. Without a subcommand: list.",
                       epilog="examples:\n"
                              "  hermes-relay sessions                 # list them\n"
                              "  hermes-relay sessions resume build    # back into the session 'build'\n"
                              "  hermes-relay sessions new             # a fresh session with a new name\n"
                              "  hermes-relay sessions kill build --remote home",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _relay_flags(p, suppress=False)
    verbs = p.add_subparsers(dest="sessions_cmd", prog="hermes-relay sessions", metavar="{list,resume,new,kill}")
    lst = add_verb(verbs, "list", "list the sessions (the default)",
                   "List the terminal sessions on the relay host: name, attached clients, windows, when created.",
                   "hermes-relay sessions list --json")
    _relay_flags(lst, suppress=True)
    res = add_verb(verbs, "resume", "open a shell in an existing session",
                   "Open a terminal in the existing session NAME (what `hermes-relay shell --session NAME` does, "
                   "after checking that it exists).",
                   "hermes-relay sessions resume build")
    res.add_argument("name", metavar="NAME", help="the session, as `hermes-relay sessions list` shows it")
    add_shell_flags(res)
    new = add_verb(verbs, "new", "open a shell in a new session",
                   "Open a terminal in a new session: NAME, or a fresh name when none is given.",
                   "hermes-relay sessions new scratch --raw")
    new.add_argument("name", metavar="NAME", nargs="?", default=None, help="the new session's name")
    add_shell_flags(new)
    kill = add_verb(verbs, "kill", "end a session and everything running in it",
                    "End the session NAME on the relay host: its programs get SIGHUP.",
                    "hermes-relay sessions kill build")
    kill.add_argument("name", metavar="NAME", help="the session, as `hermes-relay sessions list` shows it")
    _relay_flags(kill, suppress=True)
    for parser in (p, lst, res, new, kill):
        parser.set_defaults(run=run)


def _relay_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    parser.add_argument("--remote", metavar="URL|NAME", default=argparse.SUPPRESS if suppress else None,
                        help="which relay, when several are paired (env HERMES_RELAY_URL; else the default relay)")
    add_common_flags(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    verb = getattr(args, "sessions_cmd", None) or "list"
    name = session_name(args.name) if verb in ("resume", "kill") or (verb == "new" and args.name) else None
    from .. import relays

    remote = relays.resolve(ctx, getattr(args, "remote", None))
    if verb == "kill":
        assert name is not None
        with ctx.client() as client:
            killed = client.terminal_kill(name, remote)
        if getattr(args, "json", False):
            ctx.print_json(killed)
        else:
            ctx.out(f"killed session {name!r}" + (f" ({killed.get('reason')})" if killed.get("reason") else ""))
        return 0
    with ctx.client() as client:
        try:
            listed = client.terminal_list(remote)
        except TerminalRefusedError as exc:
            if verb == "list":
                raise
            # The reference relay's list fails while a session sits detached (its own bug): the attach works.
            ctx.err(f"hermes-relay: the relay could not list its sessions ({exc.message}); opening the shell anyway")
            return _open_unchecked(args, ctx, remote, name)
    sessions = [s for s in listed.get("sessions") or [] if isinstance(s, dict)]
    names = {str(s.get("name")) for s in sessions}
    if verb == "list":
        if getattr(args, "json", False):
            ctx.print_json(listed)
            return 0
        for line in list_lines(sessions, bool(listed.get("tmux_available", True))):
            ctx.out(line)
        return 0
    if verb == "resume":
        assert name is not None
        if name not in names:
            raise NotFoundError(f"no session {name!r} on the relay host",
                                hint="see `hermes-relay sessions list`; `hermes-relay sessions new NAME` makes one")
    else:
        if name is None:
            name = _fresh_name(names)
        elif name in names:
            raise UsageError(f"session {name!r} exists already", hint=f"`hermes-relay sessions resume {name}`")
    args.remote = remote
    return open_shell(args, ctx, name)


def _open_unchecked(args: argparse.Namespace, ctx: Context, remote: str | None, name: str | None) -> int:
    args.remote = remote
    return open_shell(args, ctx, name if name is not None else _fresh_name(set()))


def _fresh_name(taken: set[str]) -> str:
    n = 1
    while f"shell-{n}" in taken:
        n += 1
    return f"shell-{n}"


def list_lines(sessions: list[dict[str, Any]], tmux: bool) -> list[str]:
    if not sessions:
        lines = ["no terminal sessions on the relay host (`hermes-relay shell` opens one)"]
    else:
        rows = [HEADERS] + [_row(s) for s in sessions]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not tmux:
        lines.append("the relay host has no tmux: a session ends when its last client leaves")
    return lines


def _row(s: dict[str, Any]) -> tuple[str, str, str, str, str]:
    from ..render import printable

    attached = s.get("attached")
    created = s.get("created_at")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        import time

        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(created))
    return (printable(str(s.get("name") or NONE_MARK)),
            NONE_MARK if attached is None else str(int(attached)) if not isinstance(attached, str) else attached,
            NONE_MARK if s.get("windows") is None else str(s.get("windows")),
            printable(str(created)) if created else NONE_MARK,
            "live" if s.get("live", True) else "ended")
