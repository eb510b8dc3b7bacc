"""``hermes-relay hosts``: the paired relays, which one is the default, their names, and a route test.

    hermes-relay hosts [list]                 every paired relay, its name, * for the default
    hermes-relay hosts use URL|NAME           the default relay (also: hermes-relay use URL|NAME)
    hermes-relay hosts rename URL|NAME NAME   name a relay (also: hermes-relay rename URL NAME)
    hermes-relay hosts test [URL|NAME]        probe every saved route, through the agent

The default and the names live in ``~/.hermes/desktop-control.json`` (core/hosts.py), where the
reference client keeps them, so both CLIs agree. ``use`` and ``rename`` need no agent; ``test``
asks the agent, which holds the dialer and the pins, to walk each route (its ``doctor`` checks).
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from ...core.errors import EXIT_FAILURE, UsageError
from ..context import Context, add_common_flags, add_verb

TEST_DEADLINE = 10.0  # seconds the agent may spend probing
TEST_SLACK = 5.0
HEADERS = ("ROUTE", "URL", "RESULT", "TIME")
USE_DESCRIPTION = ("Make one paired relay the default: every command that works on one relay (devices, "
                   "access, hosts test) uses it when several are paired and none is named. Destructive "
                   "commands (forget) still need the relay named. Stored in ~/.hermes/desktop-control.json.")
RENAME_DESCRIPTION = ("Give a paired relay a name (1 to 64 characters). Every command accepts the name "
                      "where it takes a relay URL (--remote office), and the prompt shows it "
                      "([LAN | office: Tailscale]).")


def register(sub: Any) -> None:
    p = sub.add_parser("hosts", help="the paired relays: default, names, route test",
                       description=textwrap.fill("List the paired relays with their names and the default; choose "
                                                 "the default, name a relay, or test every saved route of a pairing.", 78),
                       epilog="examples:\n  hermes-relay hosts\n  hermes-relay hosts use office\n"
                              "  hermes-relay hosts rename ws://10.0.0.2:8767 home\n  hermes-relay hosts test home",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p)
    verbs = p.add_subparsers(dest="hosts_cmd", prog="hermes-relay hosts", metavar="{list,use,rename,test}")
    lst = add_verb(verbs, "list", "every paired relay (the default)",
                   "List every paired relay: its name, its URL, and * for the default.", "hermes-relay hosts list")
    use = verbs.add_parser("use", aliases=["select"], help="make a relay the default",
                           description=textwrap.fill(USE_DESCRIPTION, 78), epilog="example:\n  hermes-relay hosts use office",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _use_args(use)
    ren = add_verb(verbs, "rename", "name a relay", RENAME_DESCRIPTION, "hermes-relay hosts rename ws://10.0.0.2:8767 home")
    _rename_args(ren)
    test = add_verb(verbs, "test", "probe every saved route of a pairing",
                    "Ask the agent to try every saved route of the relay (DNS, TCP, TLS and pin, WebSocket, "
                    "auth) and print one line per route. Without URL|NAME: the default relay, else every "
                    "pairing. Exit status 1 when a relay has no working route.",
                    "hermes-relay hosts test office")
    test.add_argument("relay", nargs="?", metavar="URL|NAME", help="which relay (default: the default relay)")
    for parser in (lst, use, ren, test):
        add_common_flags(parser)
    for parser in (p, lst, use, ren, test):
        parser.set_defaults(run=run)


def register_use(sub: Any) -> None:
    p = sub.add_parser("use", help="make a relay the default (when several are paired)",
                       description=textwrap.fill(USE_DESCRIPTION, 78),
                       epilog="examples:\n  hermes-relay use office\n  hermes-relay use ws://10.0.0.2:8767\n"
                              "  hermes-relay use --none      (no default)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _use_args(p)
    add_common_flags(p, autostart=False)
    p.set_defaults(run=run, hosts_cmd="use")


def register_rename(sub: Any) -> None:
    p = sub.add_parser("rename", help="name a relay (then use the name wherever a URL goes)",
                       description=textwrap.fill(RENAME_DESCRIPTION, 78),
                       epilog="examples:\n  hermes-relay rename ws://10.0.0.2:8767 home\n"
                              "  hermes-relay rename home office\n  hermes-relay rename office --clear",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _rename_args(p)
    add_common_flags(p, autostart=False)
    p.set_defaults(run=run, hosts_cmd="rename")


def _use_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("relay", nargs="?", metavar="URL|NAME", help="a paired relay's URL or name")
    p.add_argument("--none", action="store_true", help="remove the default")


def _rename_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("relay", metavar="URL|NAME", help="a paired relay's URL or current name")
    p.add_argument("name", nargs="?", metavar="NAME", help="the new name, e.g. home or office")
    p.add_argument("--clear", action="store_true", help="remove the relay's name")


def run(args: argparse.Namespace, ctx: Context) -> int:
    verb = getattr(args, "hosts_cmd", None) or "list"
    if verb in ("use", "select"):  # select: the reference client's word
        return _use(args, ctx)
    if verb == "rename":
        return _rename(args, ctx)
    if verb == "test":
        return _test(args, ctx)
    return _list(args, ctx)


def _paired(ctx: Context, word: str) -> tuple[str, dict[str, Any]]:
    """The stored pairing ``word`` (a URL or a name) means; NotPairedError names the paired ones."""
    from .. import relays
    from ..local import find_pairing

    return find_pairing(ctx, relays.explicit(ctx, word), word.strip())


def _use(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import hosts

    path = hosts.control_file(ctx.env)
    if args.none:
        if args.relay:
            raise UsageError("give a relay or --none, not both")
        hosts.set_default(path, None)
        ctx.out(ctx.style.ok("✓") + " no default relay: commands ask which one when several are paired")
        return 0
    if not args.relay:
        raise UsageError("which relay? hermes-relay use URL|NAME", hint="see the paired ones: hermes-relay hosts")
    owner, _ = _paired(ctx, args.relay)
    hosts.set_default(path, owner)
    if getattr(args, "json", False):
        ctx.print_json({"relay_url": owner, "name": hosts.load(path).name_for(owner)})
        return 0
    from .. import relays

    ctx.out(ctx.style.ok("✓") + f" default relay: {relays.label(ctx, owner)}")
    return 0


def _rename(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import hosts

    if args.clear == (args.name is not None):
        raise UsageError("give the new NAME or --clear", hint="hermes-relay rename URL NAME")
    owner, _ = _paired(ctx, args.relay)
    path = hosts.control_file(ctx.env)
    new = None if args.clear else hosts.validate_name(args.name)
    old = hosts.rename(path, owner, new)
    if getattr(args, "json", False):
        ctx.print_json({"url": owner, "name": new, "previous": old})
        return 0
    if new is None:
        ctx.out(ctx.style.ok("✓") + f" {owner} has no name now" + (f" (was {old})" if old else ""))
    else:
        ctx.out(ctx.style.ok("✓") + f" {owner} is now called {new}" + (f" (was {old})" if old and old != new else ""))
        ctx.out(f"  use it wherever a relay URL goes, e.g. hermes-relay devices --remote {_shell_word(new)}")
    return 0


def _list(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import paths
    from ...core.store import SessionStore
    from .. import relays
    from ..local import paired_urls

    urls = paired_urls(SessionStore(paths.sessions_file(ctx.env)).sessions())
    names = relays.control(ctx)
    items = [{"url": u, "name": names.name_for(u), "default": names.is_default(u)} for u in urls]
    if getattr(args, "json", False):
        ctx.print_json({"hosts": items, "relay_url": names.relay_url})
        return 0
    if not items:
        ctx.out("No paired relays. Pair with `hermes-relay pair --remote ws://HOST:8767`.")
        return 0
    from .. import render

    rows = [["*" if i["default"] else " ", render.printable(i["name"] or render.NONE_MARK), i["url"]] for i in items]
    for line in render.table(("", "NAME", "URL"), rows, style=ctx.style):
        ctx.out(line)
    if len(items) > 1 and not any(i["default"] for i in items):
        ctx.out(ctx.style.dim("no default relay: set one with `hermes-relay use URL|NAME`"))
    return 0


# -- hosts test --------------------------------------------------------------------------------------
def _test(args: argparse.Namespace, ctx: Context) -> int:
    from .. import relays
    from ..local import require_paired

    params: dict[str, Any] = {"deadline": TEST_DEADLINE}
    if args.relay:
        params["url"] = _paired(ctx, args.relay)[0]
    else:
        chosen = relays.resolve(ctx, None)  # None with several paired and no default: test every one
        require_paired(ctx)
        if chosen is not None:
            params["url"] = chosen
    with ctx.client() as client:
        result = client.doctor(deadline=TEST_DEADLINE, url=params.get("url"), timeout=TEST_DEADLINE + TEST_SLACK)
    found = [r for r in result.get("relays") or [] if isinstance(r, dict)]
    ok = bool(found) and all(any(_reachable(rt) for rt in r.get("routes") or []) for r in found)
    if getattr(args, "json", False):
        ctx.print_json({"ok": ok, "relays": [_relay_json(r) for r in found]})
        return 0 if ok else EXIT_FAILURE
    for i, relay in enumerate(found):
        if i:
            ctx.out("")
        for line in test_lines(relay, ctx):
            ctx.out(line)
    return 0 if ok else EXIT_FAILURE


def _reachable(route: dict[str, Any]) -> bool:
    return route.get("status") in ("ok", "warn")


def _elapsed(route: dict[str, Any]) -> float | None:
    times = [s["ms"] for s in route.get("steps") or [] if isinstance(s.get("ms"), (int, float)) and s.get("status") != "skip"]
    return sum(times) if times else None


def _result(route: dict[str, Any]) -> str:
    failed = next((s for s in route.get("steps") or [] if s.get("status") == "fail"), None)
    if failed is not None:
        return f"{failed.get('step')}: {failed.get('summary')}"
    slow = next((s for s in route.get("steps") or [] if s.get("status") == "warn"), None)
    if slow is not None:
        return f"reachable, but {slow.get('step')}: {slow.get('summary')}"
    return "reachable"


def test_lines(relay: dict[str, Any], ctx: Context) -> list[str]:
    """One relay's route table and a verdict line (the best working route, or none)."""
    from .. import relays, render

    style = ctx.style
    url = str(relay.get("url"))
    lines = [style.bold(f"Relay {render.printable(relays.label(ctx, url))}")]
    routes = [r for r in relay.get("routes") or [] if isinstance(r, dict)]
    rows = []
    for route in routes:
        ms = _elapsed(route)
        mark = style.ok("✓") if _reachable(route) else style.bad("✗")
        rows.append([render.printable(str(route.get("label") or route.get("role") or "?")),
                     render.printable(str(route.get("url"))), f"{mark} {render.printable(_result(route))}",
                     f"{ms:.0f} ms" if ms is not None and _reachable(route) else ""])
    lines += render.table(HEADERS, rows, style=style) if rows else ["  (no saved routes)"]
    working = sorted((r for r in routes if _reachable(r)), key=lambda r: r.get("priority", 99))
    if working:
        lines.append(style.ok("✓") + f" best route: {working[0].get('label')} ({working[0].get('url')})")
    else:
        lines.append(style.bad("✗") + " no saved route is reachable (details: hermes-relay doctor)")
    return lines


def _relay_json(relay: dict[str, Any]) -> dict[str, Any]:
    return {"url": relay.get("url"),
            "routes": [{"url": r.get("url"), "label": r.get("label"), "reachable": _reachable(r),
                        "result": _result(r), "ms": _elapsed(r)} for r in relay.get("routes") or []]}


def _shell_word(word: str) -> str:
    import shlex

    return shlex.quote(word)
