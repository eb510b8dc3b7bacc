"""``hermes-relay approvals``: answer desktop tool calls waiting for the user's consent.

    hermes-relay approvals [list]              the calls waiting now
    hermes-relay approvals show ID             everything that call will run, exactly
    hermes-relay approvals approve ID [--always]
    hermes-relay approvals deny ID [--reason TEXT]
    hermes-relay approvals --watch             prompt y/n/a for each request as it arrives

A request waits only inside its call's deadline (about 27 s); after that it is gone and a late answer
runs nothing. ``--always`` also sets that capability to ``allow`` for that relay host.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ...core.errors import NotFoundError, UsageError
from ..context import Context, add_common_flags

if TYPE_CHECKING:
    from ...core.apitypes import ApprovalsDecideParams

HEADERS = ("ID", "TOOL", "RELAY", "EXPIRES", "WHAT")
MAX_REASON = 200


def register(sub: Any) -> None:
    p = sub.add_parser("approvals", help="approve or deny desktop tool calls waiting for you",
                       description="Desktop tool calls under an `ask` policy wait here for your answer "
                                   "until shortly before the relay gives up on them.",
                       epilog="examples:\n"
                              "  hermes-relay approvals                  # the calls waiting now, with ids\n"
                              "  hermes-relay approvals approve 3f9a2c1e\n"
                              "  hermes-relay approvals deny 3f9a2c1e --reason 'not on this machine'\n"
                              "  hermes-relay approvals --watch          # answer each as it comes: y/n/a",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watch", action="store_true", help="prompt for each request as it arrives (y/n/a)")
    add_common_flags(p)
    verbs = p.add_subparsers(dest="approvals_cmd", prog="hermes-relay approvals", metavar="{list,show,approve,deny}")
    lst = verbs.add_parser("list", help="the calls waiting now (the default)",
                           epilog="examples:\n  hermes-relay approvals list\n  hermes-relay approvals list --json",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    show = verbs.add_parser("show", help="everything one waiting call will run: the whole command, cwd, "
                                         "environment, stdin, paths",
                            epilog="example:\n  hermes-relay approvals show 3f9a2c1e",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("id", metavar="ID", help="the id `hermes-relay approvals` shows")
    approve = verbs.add_parser("approve", help="let one waiting call run",
                               epilog="examples:\n  hermes-relay approvals approve 3f9a2c1e\n"
                                      "  hermes-relay approvals approve 3f9a2c1e --always   # and from now on",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    approve.add_argument("id", metavar="ID", help="the id `hermes-relay approvals` shows")
    approve.add_argument("--always", action="store_true",
                         help="also allow this capability for this relay host from now on")
    deny = verbs.add_parser("deny", help="refuse one waiting call",
                            epilog="example:\n  hermes-relay approvals deny 3f9a2c1e --reason 'not on this machine'",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    deny.add_argument("id", metavar="ID", help="the id `hermes-relay approvals` shows")
    deny.add_argument("--reason", metavar="TEXT", help="told to the relay host's agent")
    for parser in (lst, show, approve, deny):
        add_common_flags(parser)
    for parser in (p, lst, show, approve, deny):
        parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    verb = getattr(args, "approvals_cmd", None) or "list"
    if args.watch:
        if verb != "list":
            raise UsageError("--watch cannot be combined with approve/deny")
        return _watch(ctx)
    if verb in ("list", "show"):
        wanted = _id(args.id) if verb == "show" else None
        with ctx.client() as client:
            result = client.approvals_list()
        items = result.get("approvals") or []
        if wanted is not None:
            found = [i for i in items if i.get("id") == wanted]
            if not found:
                raise NotFoundError(f"no pending approval {wanted!r}: it was already answered, it expired, "
                                    "or its call ended", hint="see the pending ones with `hermes-relay approvals`")
            if getattr(args, "json", False):
                ctx.print_json(found[0])
                return 0
            for line in request_lines(found[0], ctx):
                ctx.out(line)
            ctx.out(ctx.style.dim(f"answer: hermes-relay approvals approve {wanted} [--always] | deny {wanted}"))
            return 0
        if getattr(args, "json", False):
            ctx.print_json(result)
            return 0
        for line in list_lines(items, ctx):
            ctx.out(line)
        return 0
    params: ApprovalsDecideParams = {"id": _id(args.id), "approve": verb == "approve"}
    if verb == "approve" and args.always:
        params["always"] = True
    if verb == "deny" and args.reason is not None:
        if not args.reason.strip() or len(args.reason) > MAX_REASON:
            raise UsageError(f"--reason must be 1 to {MAX_REASON} characters")
        params["reason"] = args.reason.strip()
    with ctx.client() as client:
        result = client.approvals_decide(params)
    if getattr(args, "json", False):
        ctx.print_json(result)
        return 0
    ctx.out(decided_line(result, ctx))
    if result.get("always"):
        ctx.out(f"  {result.get('capability')} is now allowed for {result.get('url')} (see `hermes-relay access`)")
    return 0


def _id(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 64 or not value.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"{value!r} is not an approval id", hint="copy it from `hermes-relay approvals`")
    return value


def decided_line(result: dict[str, Any], ctx: Context) -> str:
    verb = "approved" if result.get("approved") else "denied"
    mark = ctx.style.ok("✓") if result.get("approved") else ctx.style.warn("✗")
    from .. import render

    shown = [render.printable(str(result.get(k))) for k in ("id", "tool", "url")]
    return f"{mark} {verb} {shown[0]} ({shown[1]} for {shown[2]})"


def list_lines(items: list[dict[str, Any]], ctx: Context) -> list[str]:
    from .. import render

    if not items:
        return ["(no desktop calls waiting for approval)"]
    now = ctx.now()
    rows = [[render.printable(str(i.get("id"))), render.printable(str(i.get("tool"))),
             render.printable(str(i.get("url"))), render.countdown(i.get("expires_at"), now), _what(i, ctx)]
            for i in items]
    lines = render.table(HEADERS, rows, style=ctx.style)
    lines.append("")
    lines.append(ctx.style.dim("answer: hermes-relay approvals approve ID [--always] | deny ID [--reason TEXT]"))
    return lines


def _what(item: dict[str, Any], ctx: Context) -> str:
    """The list's one-line WHAT: the preview, and a pointer to ``show`` when it is not the whole call."""
    from .. import render

    preview = render.printable(str(item.get("preview") or ""))
    details = item.get("details") or {}
    command = details.get("command")
    whole = (command is None or str(command) == str(item.get("preview"))) and not (
        details.get("env") or details.get("stdin"))
    if whole:
        return preview
    mark = "⚠ " if details.get("dangerous_env") else ""
    return ctx.style.warn(mark) + preview + ctx.style.dim(f"  (all of it: hermes-relay approvals show {item.get('id')})")


def _block(label: str, text: str) -> list[str]:
    """``label: text`` on one line, or the label then every line of ``text`` as it is (escaped, never cut)."""
    from .. import render

    lines = text.split("\n")
    if len(lines) == 1:
        return [f"  {label}: {render.printable(text)}"]
    return [f"  {label}:"] + [f"    {render.printable(line)}" for line in lines]


def detail_lines(details: dict[str, Any], ctx: Context) -> list[str]:
    """Everything the call will run (core/desktop.call_details), whole and escaped visibly."""
    from .. import render

    lines: list[str] = []
    if isinstance(details.get("command"), str):
        lines += _block("command", details["command"])
    if details.get("cwd"):
        lines.append(f"  cwd: {render.printable(str(details['cwd']))}")
    risky = set(details.get("dangerous_env") or [])
    for name, value in (details.get("env") or {}).items():
        line = f"  env: {render.printable(str(name))}={render.printable(str(value))}"
        lines.append(ctx.style.warn(f"{line}   ⚠ changes what the command runs") if name in risky else line)
    if isinstance(details.get("stdin"), str):
        lines += _block("stdin", details["stdin"])
    for key, value in (details.get("paths") or {}).items():
        lines.append(f"  {render.printable(str(key))}: {render.printable(str(value))}")
    return lines


def request_lines(event: dict[str, Any], ctx: Context) -> list[str]:
    from .. import render

    lines = [ctx.style.bold(f"{render.printable(str(event.get('url')))} wants to run "
                            f"{render.printable(str(event.get('tool')))} ({event.get('capability')})")]
    details = event.get("details") or {}
    shown = detail_lines(details, ctx) if isinstance(details, dict) else []
    if shown:
        lines += shown
    elif event.get("preview"):
        lines.append("  " + render.printable(str(event["preview"])))
    if event.get("reason"):
        lines += _block("reason", str(event["reason"]))
    lines.append(f"  id {render.printable(str(event.get('id')))}, "
                 f"expires {render.countdown(event.get('expires_at'), ctx.now())}")
    return lines


def _watch(ctx: Context) -> int:
    """Prompt for every request as it arrives, across agent restarts (cli/approvals_watch.py)."""
    from ..approvals_watch import watch

    return watch(ctx, request_lines, decided_line)
