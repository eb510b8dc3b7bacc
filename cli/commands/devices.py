"""``hermes-relay devices``: list, revoke and extend the sessions paired with a relay, via the agent.

The agent holds the token and talks to the relay's sessions API; this module validates the input
first (URL, prefix, TTL: exit 2 before the agent starts) and renders the answer.
"""

from __future__ import annotations

import argparse
from typing import Any

from ...core.errors import AmbiguousError, ForbiddenError, NotFoundError, UsageError
from ...core.wire import MIN_PREFIX_LEN
from ..confirm import add_yes_flag, confirm, require_answerable
from ..context import Context, add_common_flags, add_verb
from ..render import NONE_MARK, Style

DEFAULT_EXTEND_TTL = 86400  # one day, the reference CLI's default for `devices extend`
# A device may only shorten its own session; the relay host's operator extends any (relay/api.py).
OPERATOR_EXTEND = "hermes-relay-server sessions extend {prefix} --ttl {ttl}"
HEADERS = ("PREFIX", "DEVICE", "PLATFORM", "CREATED", "LAST SEEN", "EXPIRES")


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list, revoke or extend the devices paired with a relay",
                       description="Manage every device paired with a relay (this computer, phones, "
                                   "other desktops). Without a subcommand: list.",
                       epilog="examples:\n"
                              "  hermes-relay devices                     # the devices on the paired relay\n"
                              "  hermes-relay devices --remote wss://relay.example.com\n"
                              "  hermes-relay devices revoke kd214La2",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _relay_flags(p, suppress=False)
    verbs = p.add_subparsers(dest="devices_cmd", prog="hermes-relay devices", metavar="{list,revoke,extend}")
    lst = add_verb(verbs, "list", "list the paired devices (the default)",
                "List every session on the relay: token prefix, device, platform, when it was created and "
                "last seen (or online), and when it expires. This computer is marked with ●.",
                "hermes-relay devices list --remote wss://relay.example.com")
    _relay_flags(lst, suppress=True)
    rev = add_verb(verbs, "revoke", "end a device's session by its token prefix",
                "End a device's session on the relay: it is disconnected and its token stops working. "
                f"Give at least {MIN_PREFIX_LEN} characters of its token prefix; on a terminal you are asked "
                "to confirm (--yes for scripts).",
                "hermes-relay devices revoke kd214La2")
    rev.dash_positionals = True  # type: ignore[attr-defined]  # cli/main.py Parser: "-meWx" is a prefix
    rev.add_argument("prefix", metavar="PREFIX",
                     help=f"the token prefix shown by `hermes-relay devices` (at least {MIN_PREFIX_LEN} characters)")
    add_yes_flag(rev)
    _relay_flags(rev, suppress=True)
    ext = add_verb(verbs, "extend", "change this device's session lifetime (only shorter: the relay host extends)",
                "Give this computer's session a new lifetime counted from now (default 1 day; one that ends "
                "sooner than now needs an explicit --ttl). The relay lets a device only shorten its own "
                "session: to make a session last longer, run on the relay host: "
                + OPERATOR_EXTEND.format(prefix="PREFIX", ttl="30d"),
                "hermes-relay devices extend kd214La2 --ttl 2h           # shorten: ends in 2h\n"
                "hermes-relay-server sessions extend kd214La2 --ttl 30d  # on the relay host")
    ext.dash_positionals = True  # type: ignore[attr-defined]
    ext.add_argument("prefix", metavar="PREFIX", help="the token prefix shown by `hermes-relay devices`")
    ext.add_argument("--ttl", default=None,
                     help="new lifetime from now: seconds, 12h, 30d, 1y, or never (default 86400 = 1 day; "
                          "required when it would shorten the session); the relay accepts only a shorter one")
    _relay_flags(ext, suppress=True)
    for parser in (p, lst, rev, ext):
        parser.set_defaults(run=run)


def _relay_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--remote", metavar="URL|NAME", default=default,
                        help="which relay, when several are paired (env HERMES_RELAY_URL; else the "
                             "default relay, see `hermes-relay use`)")
    add_common_flags(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    verb = getattr(args, "devices_cmd", None) or "list"
    params: dict[str, Any] = {}
    url = _relay_url(args, ctx)
    if url is not None:
        params["url"] = url
    if verb in ("revoke", "extend"):
        params["prefix"] = _prefix(args.prefix)
    explicit_ttl = verb == "extend" and args.ttl is not None
    if verb == "extend":
        from ...core.timefmt import parse_ttl

        params["ttl_seconds"] = parse_ttl(args.ttl) if explicit_ttl else DEFAULT_EXTEND_TTL
    if verb == "revoke":
        require_answerable(ctx, yes=args.yes, what="devices revoke")
    from ..local import require_paired

    require_paired(ctx, url)
    with ctx.client() as client:
        if verb == "revoke" and not args.yes:
            listed = client.devices_list(url)
            target = _match(listed, params["prefix"])
            if not confirm(ctx, f"Revoke {_describe(target, ctx)}?", yes=False, what="devices revoke"):
                ctx.err("not revoked: nothing changed")
                return 1
            params["prefix"] = str(target.get("token_prefix") or params["prefix"])
        if verb == "extend":
            listed = client.devices_list(url)
            target = _match(listed, params["prefix"])
            _check_not_shorter(target, params["ttl_seconds"], explicit_ttl, ctx)
            try:
                result = client.devices_extend(params["prefix"], params["ttl_seconds"], url)
            except ForbiddenError as exc:
                prefix = str(target.get("token_prefix") or params["prefix"])
                raise ForbiddenError(exc.message, hint="a device can only shorten its own session; to extend it, "
                                     "run on the relay host: " + _operator_extend(prefix, params["ttl_seconds"]),
                                     data=exc.data) from None
        else:
            result = client.devices_revoke(params["prefix"], url) if verb == "revoke" else client.devices_list(url)
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


def _match(listed: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The one listed session whose token prefix starts with ``prefix``."""
    sessions = [s for s in listed.get("sessions") or [] if isinstance(s, dict)]
    hits = [s for s in sessions if str(s.get("token_prefix") or "").startswith(prefix)]
    if not hits:
        raise NotFoundError(f'no session on {listed.get("url") or "the relay"} matches prefix "{prefix}"',
                            hint="list the sessions with `hermes-relay devices`")
    if len(hits) > 1:
        raise AmbiguousError(f'prefix "{prefix}" matches {len(hits)} sessions: '
                             + ", ".join(str(s.get("token_prefix")) for s in hits),
                             hint="give more characters of the token prefix")
    return hits[0]


def _describe(session: dict[str, Any], ctx: Context) -> str:
    """``kd214La2 (vm, last seen 5m ago)``; ``this device`` is named so nobody cuts off their own link."""
    from .. import render

    details = [render.printable(str(session.get("device_name") or "(unnamed)"))]
    if _is_current(session):
        details.append("this device")
    seen = session.get("last_seen")
    details.append(f"last seen {render.ago(seen, ctx.now())}" if seen is not None else "never seen")
    return f"{session.get('token_prefix')} ({', '.join(details)})"


def _check_not_shorter(session: dict[str, Any], ttl: int, explicit: bool, ctx: Context) -> None:
    """Refuse to shorten a session by the default TTL; warn when an explicit TTL shortens it."""
    from .. import render

    if ttl == 0:
        return
    expires = session.get("expires_at")
    now = ctx.now()
    current = render.to_epoch(expires)
    if expires is not None and (current is None or current <= now + ttl):
        return
    left = "never expires" if expires is None else f"expires {render.expiry(expires, now)}"
    prefix = str(session.get("token_prefix"))
    if not explicit:
        # Not `--ttl never` or `--ttl 30d` here: the relay refuses a device any longer lifetime.
        longer = "it cannot last longer" if expires is None else \
            "to extend it, run on the relay host: " + _operator_extend(prefix, 30 * 86400)
        raise UsageError(f"{prefix} {left} now: the default 1 day would shorten it",
                         hint=f"to shorten it, pass the lifetime: hermes-relay devices extend {prefix} --ttl 1d; "
                              f"{longer}")
    from ...core.timefmt import short_duration

    ctx.err(ctx.style.warn(f"warning: {prefix} {left} now; this shortens it to {short_duration(ttl)}"))


def _operator_extend(prefix: str, ttl_seconds: int) -> str:
    """The relay host's command that gives ``prefix`` this lifetime (30d, 12h, never: as --ttl takes it)."""
    for unit, seconds in (("d", 86400), ("h", 3600)):
        if ttl_seconds and ttl_seconds % seconds == 0:
            return OPERATOR_EXTEND.format(prefix=prefix, ttl=f"{ttl_seconds // seconds}{unit}")
    return OPERATOR_EXTEND.format(prefix=prefix, ttl=ttl_seconds or "never")


def _is_current(session: dict[str, Any]) -> bool:
    return bool(session.get("is_current") or session.get("revoked_self"))


def list_lines(result: dict[str, Any], ctx: Context) -> list[str]:
    from .. import render

    now, style = ctx.now(), ctx.style
    url = result.get("url") or "?"
    sessions = [s for s in result.get("sessions") or [] if isinstance(s, dict)]
    if not sessions:
        return [f"(no paired devices on {url})"]
    rows = []
    for s in sessions:
        name = render.printable(str(s.get("device_name") or "(unnamed)"))
        if _is_current(s):
            name += " ● (this device)"  # plain: colour codes would throw the columns off
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
            "online" if s.get("connected") is True or s.get("online") is True else render.ago(s.get("last_seen"), now),
            render.expiry(s.get("expires_at"), now),
        ])
    lines = [style.bold(f"Devices paired with {url} ({len(sessions)})"), ""]
    table = render.table(HEADERS, rows, style=Style())
    width = render.terminal_width(ctx.stdout, ctx.env)
    if width is not None and max(render.display_width(line) for line in table) > width:
        lines.extend(_blocks(rows))  # too narrow for columns: one block per device
        return lines + [style.dim("revoke: hermes-relay devices revoke PREFIX"),
                        style.dim("extend: " + OPERATOR_EXTEND.format(prefix="PREFIX", ttl="30d"))]
    lines.extend(render.table(HEADERS, rows, style=style))
    lines.append("")
    lines.append(style.dim("revoke: hermes-relay devices revoke PREFIX"))
    lines.append(style.dim("extend on the relay host: " + OPERATOR_EXTEND.format(prefix="PREFIX", ttl="30d")))
    return lines


def _blocks(rows: list[list[str]]) -> list[str]:
    out: list[str] = []
    for prefix, name, platform, created, seen, expires in rows:
        out.append(f"  {prefix}  {name}")
        if platform != NONE_MARK:
            out.append(f"      platform:  {platform}")
        out.append(f"      created:   {created}, last seen {seen}")
        out.append(f"      expires:   {expires}")
        out.append("")
    return out


def revoke_lines(result: dict[str, Any], ctx: Context) -> list[str]:
    line = ctx.style.ok("✓") + f" revoked {result.get('revoked')}"
    if result.get("is_current") or result.get("revoked_self"):
        line += " (this device: pair again to reconnect)"
    return [line]


def extend_lines(result: dict[str, Any], ctx: Context, ttl_seconds: int) -> list[str]:
    """``✓ extended <prefix>: now expires in 7d`` (the time left as the relay answered it)."""
    from .. import render

    given = result.get("session")  # the agent reads both relays' PATCH answers and always nests the session
    session: dict[str, Any] = given if isinstance(given, dict) else {}
    if "expires_at" not in session:
        when = "expires at a time the relay did not say"
    elif session.get("expires_at") is None:
        when = "never expires"
    else:
        when = f"expires {render.expiry(session.get('expires_at'), ctx.now())}"
    line = ctx.style.ok("✓") + f" extended {session.get('token_prefix') or '?'}: now {when}"
    lines = [line]
    if result.get("store_updated"):
        lines.append("  (this device: the stored expiry was updated)")
    return lines


def _relay_url(args: argparse.Namespace, ctx: Context) -> str | None:
    from .. import relays

    return relays.resolve(ctx, getattr(args, "remote", None))  # a URL or name, HERMES_RELAY_URL, the default


def _prefix(raw: str) -> str:
    from ...core.codes import validate_token_prefix

    return validate_token_prefix(raw)
