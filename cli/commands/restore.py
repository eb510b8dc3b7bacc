"""``hermes-relay restore URL``: take back a pairing another client removed from the shared store.

Other Hermes clients share ``~/.hermes/remote-sessions.json``, and the reference CLI deletes a record
after one failed connection. The agent does not let that end a pairing: it keeps the record aside
and ``status`` shows it as paused. This puts it back into the store; the agent reconnects at once.
(``hermes-relay forget URL`` removes a paused pairing for good.)
"""

from __future__ import annotations

import argparse
from typing import Any

from ..context import Context, add_common_flags

RESTORE_TIMEOUT = 15.0  # seconds: two small file writes in the agent (the store lock may be busy)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "restore", help="put back a pairing another client removed from the store (status: paused)",
        description="Put a paused pairing back into the session store and reconnect it. A pairing is "
                    "paused when another client (or a hand edit) removes it from the shared store: the "
                    "agent keeps its credentials until you restore it here or remove it for good with "
                    "`hermes-relay forget URL`.",
        epilog="example:\n  hermes-relay restore ws://192.168.1.5:8767",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL", help="the paused relay URL shown by `hermes-relay status`")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ...core.routes import normalize_relay_url

    url, _ = normalize_relay_url(args.url)
    with ctx.client() as client:
        result = client.restore(url, timeout=RESTORE_TIMEOUT)
    if getattr(args, "json", False):
        ctx.print_json(result)
        return 0
    if result.get("restored"):
        ctx.out(ctx.style.ok("✓") + f" restored {result.get('url')}: the agent reconnects it now")
    else:
        ctx.out(f"{result.get('url')} is in the store again already (paired anew); the paused copy was dropped")
    return 0
