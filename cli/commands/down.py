"""``hermes-relay down [URL|NAME]`` and ``up [URL|NAME]``: take this computer off a relay and back.

Like ``tailscale down``: while down, the agent holds no link to that relay (every relay without an
argument, later pairings included), so the relay host cannot call a tool here; the pairing, its
credentials and its desktop policy stay, and the shared store is not touched (other Hermes clients
see no change). The switch lives in the agent's own file (core/offline.py), so it outlives agent
restarts and autostart until ``up``. ``status``, ``route`` and the prompt show ``down``.

Both ask the agent (it stops or starts the links at once): with ``--no-autostart`` and no agent
running they exit 3 and change nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..context import Context, add_common_flags

CALL_TIMEOUT = 15.0  # seconds: a small file write and a store read in the agent (the store lock may be busy)


def register(sub: Any) -> None:
    _register(sub, "down", help="take this computer off the relay (all, or one) until `hermes-relay up`",
              description="Take this computer off every relay, or off one relay: the agent closes its link "
                          "and keeps it closed across restarts until `hermes-relay up`, so the relay host "
                          "cannot call tools here. The pairing, its tokens and its desktop access are kept; "
                          "the shared session store is not changed. `status`, `route` and the prompt show "
                          "`down`.",
              examples="  hermes-relay down                        # off every relay, later pairings too\n"
                       "  hermes-relay down office                 # off the relay named office\n"
                       "  hermes-relay down ws://192.168.1.5:8767")


def _register(sub: Any, name: str, *, help: str, description: str, examples: str) -> None:
    p = sub.add_parser(name, help=help, description=description, epilog="examples:\n" + examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", metavar="URL|NAME", nargs="?", default=None,
                   help="one paired relay (URL or name); without it, every relay")
    add_common_flags(p)
    p.set_defaults(run=run, verb=name)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from .. import relays

    verb = args.verb
    url = relays.explicit(ctx, args.url) if args.url else None
    if verb == "down":  # nothing to take off: no agent is started for it
        from ..local import require_paired

        require_paired(ctx, url)
    with ctx.client() as client:
        result = client.set_down(url, down=verb == "down", timeout=CALL_TIMEOUT)
    if getattr(args, "json", False):
        ctx.print_json(result)
        return 0
    ctx.out(describe(verb, result, ctx))
    return 0


def describe(verb: str, result: dict[str, Any], ctx: Context) -> str:
    from .. import relays

    url = result.get("url")
    down = [str(u) for u in result.get("down") or []]
    what = relays.label(ctx, str(url)) if url else "every relay"
    if verb == "down":
        head = (ctx.style.ok("✓") + f" off {what}" if result.get("changed") else f"already off {what}")
        tail = ("; later pairings too" if result.get("all") and url is None else "")
        return (f"{head}{tail}: no link, so the relay host cannot call tools here; the pairing is kept. "
                f"Back on: hermes-relay up{' ' + str(url) if url else ''}")
    if not result.get("changed"):
        return f"{what} was not down; nothing changed"
    still = f" (still down: {', '.join(relays.label(ctx, u) for u in down)})" if down else ""
    return ctx.style.ok("✓") + f" back on {what}: the agent connects now{still}"
