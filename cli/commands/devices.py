"""``hermes-relay devices``: list, revoke and extend the sessions paired with a relay, via the agent.

The agent holds the token and talks to the relay's sessions API; this module validates the input
first (URL, prefix, TTL: exit 2 before the agent starts) and renders the answer.
"""

from __future__ import annotations

import argparse
from typing import Any

from hermes_relay.cli.context import Context, add_common_flags

DEFAULT_EXTEND_TTL = "86400"  # one day, the reference CLI's default for `devices extend`
HEADERS = ("PREFIX", "DEVICE", "PLATFORM", "CREATED", "LAST SEEN", "EXPIRES")


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list, revoke or extend the devices paired with a relay",
                       description="Manage every device paired with a relay (this computer, phones, "
                                   "other desktops). Without a subcommand: list.")
    _relay_flags(p, suppress=False)
    verbs = p.add_subparsers(dest="devices_cmd", prog="hermes-relay devices", metavar="{list,revoke,extend}")
    lst = verbs.add_parser("list", help="list the paired devices (the default)")
    _relay_flags(lst, suppress=True)
    rev = verbs.add_parser("revoke", help="end a device's session by its token prefix")
    rev.add_argument("prefix", metavar="PREFIX", help="the token prefix shown by `hermes-relay devices`")
    _relay_flags(rev, suppress=True)
    ext = verbs.add_parser("extend", help="give a device's session a new lifetime")
    ext.add_argument("prefix", metavar="PREFIX", help="the token prefix shown by `hermes-relay devices`")
    ext.add_argument("--ttl", default=DEFAULT_EXTEND_TTL,
                     help="new lifetime from now: seconds, 12h, 30d, 1y, or never (default 86400 = 1 day)")
    _relay_flags(ext, suppress=True)
    for parser in (p, lst, rev, ext):
        parser.set_defaults(run=run)


def _relay_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--remote", metavar="URL", default=default,
                        help="which relay, when several are paired (env HERMES_RELAY_URL)")
    add_common_flags(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    verb = getattr(args, "devices_cmd", None) or "list"
    params: dict[str, Any] = {}
    url = _relay_url(args, ctx)
    if url is not None:
        params["url"] = url
    if verb in ("revoke", "extend"):
        params["prefix"] = _prefix(args.prefix)
    if verb == "extend":
        from hermes_relay.core.timefmt import parse_ttl

        params["ttl_seconds"] = parse_ttl(args.ttl)
    with ctx.client() as client:
        result = client.call(f"devices.{verb}", params)
    if getattr(args, "json", False):
        ctx.print_json(result)
        return 0
    if verb == "extend":
        lines = extend_lines(result, ctx, params["ttl_seconds"])
    else:
        lines = {"list": list_lines, "revoke": revoke_lines}[verb](result, ctx)
    for line in lines:
        ctx.out(line)
    return 0


def list_lines(result: dict[str, Any], ctx: Context) -> list[str]:
    from hermes_relay.cli import render

    now, style = ctx.now(), ctx.style
    url = result.get("url") or "?"
    sessions = [s for s in result.get("sessions") or [] if isinstance(s, dict)]
    if not sessions:
        return [f"(no paired devices on {url})"]
    rows = []
    for s in sessions:
        name = render.printable(str(s.get("device_name") or "(unnamed)"))
        if s.get("is_current"):
            name += " (this device)"
        details: list[str] = []
        for key in ("device_model", "device_platform", "client_surface"):
            value = str(s.get(key) or "")
            if value and value.lower() not in (d.lower() for d in details):  # phones say "android" twice
                details.append(value)
        rows.append([
            str(s.get("token_prefix") or "?"),
            name,
            render.printable(" · ".join(details)) if details else render.NONE_MARK,
            render.ago(s.get("created_at"), now),
            render.ago(s.get("last_seen"), now),
            render.expiry(s.get("expires_at"), now),
        ])
    lines = [style.bold(f"Devices paired with {url} ({len(sessions)})"), ""]
    lines.extend(render.table(HEADERS, rows, style=style))
    lines.append("")
    lines.append(style.dim("revoke: hermes-relay devices revoke PREFIX    "
                           "extend: hermes-relay devices extend PREFIX --ttl 30d"))
    return lines


def revoke_lines(result: dict[str, Any], ctx: Context) -> list[str]:
    line = ctx.style.ok("✓") + f" revoked {result.get('revoked')}"
    if result.get("is_current"):
        line += " (this device: pair again to reconnect)"
    return [line]


def extend_lines(result: dict[str, Any], ctx: Context, ttl_seconds: int) -> list[str]:
    """``✓ extended <prefix>: now expires in 7 days``.

    The relay counted the TTL from its own clock a moment ago, so the time left is a little under
    the TTL asked for and would round down to ``6d``; when it matches the request (within a
    minute) the requested TTL is shown, otherwise (the relay capped it) the time actually left.
    """
    from hermes_relay.cli import render
    from hermes_relay.core import timefmt

    session = result.get("session") or {}
    expires_at = render.to_epoch(session.get("expires_at"))
    now = ctx.now()
    if session.get("expires_at") is None and "expires_at" in session:
        when = "never expires"
    elif expires_at is not None and ttl_seconds > 0 and abs(expires_at - now - ttl_seconds) < 60:
        when = f"expires in {timefmt.ttl_words(ttl_seconds)}"
    else:
        when = f"expires {render.expiry(session.get('expires_at'), now)}"
    return [ctx.style.ok("✓") + f" extended {session.get('token_prefix') or '?'}: now {when}"]


def _relay_url(args: argparse.Namespace, ctx: Context) -> str | None:
    raw = getattr(args, "remote", None) or ctx.env.get("HERMES_RELAY_URL")
    if not raw:
        return None
    from hermes_relay.core.routes import normalize_relay_url

    return normalize_relay_url(raw)[0]


def _prefix(raw: str) -> str:
    from hermes_relay.core.codes import validate_token_prefix

    return validate_token_prefix(raw)
