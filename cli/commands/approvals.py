"""``hermes-relay approvals``: answer desktop tool calls waiting for the user's consent.

    hermes-relay approvals [list]              the calls waiting now
    hermes-relay approvals approve ID [--always]
    hermes-relay approvals deny ID [--reason TEXT]
    hermes-relay approvals --watch             prompt y/n/a for each request as it arrives

A request waits only inside its call's deadline (about 27 s); after that it is gone and a late answer
runs nothing. ``--always`` also sets that capability to ``allow`` for that relay host.
"""

from __future__ import annotations

import argparse
from typing import Any

from hermes_relay.cli.context import Context, add_common_flags
from hermes_relay.core.errors import UsageError

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
    verbs = p.add_subparsers(dest="approvals_cmd", prog="hermes-relay approvals", metavar="{list,approve,deny}")
    lst = verbs.add_parser("list", help="the calls waiting now (the default)",
                           epilog="examples:\n  hermes-relay approvals list\n  hermes-relay approvals list --json",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
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
    for parser in (lst, approve, deny):
        add_common_flags(parser)
    for parser in (p, lst, approve, deny):
        parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    verb = getattr(args, "approvals_cmd", None) or "list"
    if args.watch:
        if verb != "list":
            raise UsageError("--watch cannot be combined with approve/deny")
        return _watch(ctx)
    if verb == "list":
        with ctx.client() as client:
            result = client.call("approvals.list", {})
        if getattr(args, "json", False):
            ctx.print_json(result)
            return 0
        for line in list_lines(result.get("approvals") or [], ctx):
            ctx.out(line)
        return 0
    params: dict[str, Any] = {"id": _id(args.id), "approve": verb == "approve"}
    if verb == "approve" and args.always:
        params["always"] = True
    if verb == "deny" and args.reason is not None:
        if not args.reason.strip() or len(args.reason) > MAX_REASON:
            raise UsageError(f"--reason must be 1 to {MAX_REASON} characters")
        params["reason"] = args.reason.strip()
    with ctx.client() as client:
        result = client.call("approvals.decide", params)
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
    return f"{mark} {verb} {result.get('id')} ({result.get('tool')} for {result.get('url')})"


def list_lines(items: list[dict[str, Any]], ctx: Context) -> list[str]:
    from hermes_relay.cli import render

    if not items:
        return ["(no desktop calls waiting for approval)"]
    now = ctx.now()
    rows = [[str(i.get("id")), render.printable(str(i.get("tool"))), render.printable(str(i.get("url"))),
             render.countdown(i.get("expires_at"), now), render.printable(str(i.get("preview") or ""))]
            for i in items]
    lines = render.table(HEADERS, rows, style=ctx.style)
    lines.append("")
    lines.append(ctx.style.dim("answer: hermes-relay approvals approve ID [--always] | deny ID [--reason TEXT]"))
    return lines


def request_lines(event: dict[str, Any], ctx: Context) -> list[str]:
    from hermes_relay.cli import render

    lines = [ctx.style.bold(f"{render.printable(str(event.get('url')))} wants to run "
                            f"{render.printable(str(event.get('tool')))} ({event.get('capability')})")]
    if event.get("preview"):
        lines.append("  " + render.printable(str(event["preview"])))
    if event.get("reason"):
        lines.append("  reason: " + render.printable(str(event["reason"])))
    lines.append(f"  id {event.get('id')}, expires {render.countdown(event.get('expires_at'), ctx.now())}")
    return lines


def _watch(ctx: Context) -> int:
    """Prompt for every request as it arrives, across agent restarts (cli/approvals_watch.py)."""
    from hermes_relay.cli.approvals_watch import watch

    return watch(ctx, request_lines, decided_line)
