"""``hermes-relay pin accept URL``: trust a relay's new TLS certificate on purpose.

The agent pins each ``wss://`` relay's certificate key on first use and stops the link when it
changes (state ``pin_mismatch``). Accepting the new pin is a trust decision only the user can make,
so it is a separate, explicit command rather than something re-pairing does silently (the reference
client kept the old pin and left no way out but editing the store: anchor-cli §12a).

It looks before it acts: the agent first reports the certificate the relay presents now, the user
sees both fingerprints and confirms (``--yes`` for scripts), then exactly the fingerprint shown is
stored. An unchanged pin is reported as such and nothing is written.
"""

from __future__ import annotations

import argparse
from typing import Any

from ...core.errors import EXIT_FAILURE, UsageError
from ..confirm import add_yes_flag, confirm
from ..context import Context, add_common_flags, add_verb

EXPLANATION = (
    "This deliberately trusts the certificate the relay presents now. Do it only if you (or the relay's "
    "operator) changed the relay's certificate; an unexpected change can mean someone is intercepting "
    "the connection."
)


def register(sub: Any) -> None:
    p = sub.add_parser("pin", help="accept a relay's new TLS certificate after a deliberate change",
                       description="Manage certificate pins. " + EXPLANATION,
                       epilog="example:\n  hermes-relay pin accept wss://relay.example.com",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="pin_cmd", prog="hermes-relay pin", metavar="{accept}")
    accept = add_verb(verbs, "accept", "trust the certificate the relay presents now",
                      "Show the certificate the relay presents now next to the pinned one, ask, "
                      "and pin exactly the one shown (--yes for scripts). " + EXPLANATION,
                      "hermes-relay pin accept wss://relay.example.com")
    accept.add_argument("url", metavar="URL", help="the relay URL shown by `hermes-relay status`")
    add_yes_flag(accept)
    for parser in (p, accept):
        add_common_flags(parser)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    if getattr(args, "pin_cmd", None) != "accept":
        raise UsageError("pin needs a subcommand: accept URL", hint="see `hermes-relay pin --help`")
    from .. import relays

    raw = args.url.strip()
    if "://" not in raw and relays.control(ctx).url_for(raw) is None:
        raw = f"wss://{raw}"  # only TLS relays have a pin: a bare HOST:PORT means wss:// (not the ws:// default)
    url = relays.explicit(ctx, raw)  # a URL or a relay's name
    if not url.startswith("wss://"):
        raise UsageError(f"{url} is not a wss:// URL: only TLS relays have a certificate pin",
                         hint="`hermes-relay status` shows each relay's URL and the pin of the wss:// ones")
    from ..local import require_paired

    require_paired(ctx, url)
    as_json = getattr(args, "json", False)
    with ctx.client() as client:
        seen = client.pin_accept(url, apply=False)
        shown_url = seen.get("url") or url
        if not seen.get("changed"):
            if as_json:
                ctx.print_json(seen)
            else:
                ctx.out(ctx.style.ok("✓") + f" {shown_url}: this certificate is already trusted; nothing changed")
                ctx.out(f"  pin: {seen.get('new_pin') or '(none)'}")
            return 0
        if not as_json:
            ctx.out(f"{shown_url} presents a different certificate:")
            ctx.out(f"  old pin: {seen.get('old_pin') or '(none)'}")
            ctx.out(f"  new pin: {seen.get('new_pin') or '(none)'}")
            ctx.out(ctx.style.warn(EXPLANATION))
            ctx.flush()
        if not confirm(ctx, "Trust the new certificate?", yes=args.yes, what="pin accept"):
            ctx.err("not accepted: nothing changed")
            return EXIT_FAILURE
        result = client.pin_accept(url, pin=seen.get("new_pin"))
    if as_json:
        ctx.print_json(result)
        return 0
    ctx.out(ctx.style.ok("✓") + f" accepted the new certificate for {result.get('url') or shown_url}")
    return 0
