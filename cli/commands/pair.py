"""``hermes-relay pair``: trade a one-time code (or an invite) for a stored session, via the agent.

Everything that can be checked locally is checked before the agent is contacted or started, so a
mistyped code, URL or invite fails at once with exit 2: the code (core.codes), the relay URL
(core.routes) and the invite (core.payload). The agent does the network work (probing routes,
the auth handshake, writing the store) and streams one ``pair.progress`` line per step, which is
printed as it arrives.

Which input wins: an explicit ``--pair-qr``; then an explicit ``--remote`` or code; then
``HERMES_RELAY_PAIR_QR``; then ``HERMES_RELAY_URL`` with ``HERMES_RELAY_CODE`` or a prompt. So a
flag always beats the environment, and an invite beats a URL given the same way.

The interactive prompt cleans pasted text (bracketed-paste markers, ANSI, spaces) and echoes the
code it will use, because terminals that ignore the bracketed-paste switch are common (anchor-cli
§12a).
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from hermes_relay.cli.context import Context, add_common_flags
from hermes_relay.core.errors import UsageError

PAIR_TIMEOUT = 60.0  # seconds: route probes (4 s each, tiered) plus the auth handshake, with margin
CODE_ATTEMPTS = 3  # as the reference CLI
MAX_DEVICE_NAME = 64  # the reference client's limit for host display names
BRACKETED_PASTE_OFF = "\x1b[?2004l"
# Bracketed-paste markers whose ESC was eaten on the way (Windows Terminal, old WezTerm: anchor-cli
# §12a). Left in, their digits would become part of the code ("200F3W7EY201").
_BARE_PASTE_MARKERS = ("[200~", "[201~")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pair",
        help="pair this computer with a relay (one-time code or invite)",
        description="Pair this computer with a Hermes relay. Get a code or invite by running "
                    "`hermes-pair` on the relay host; the code is valid for 10 minutes, once.",
        epilog="examples:\n"
               "  hermes-relay pair F3W7EY --remote ws://192.168.1.5:8767\n"
               "  hermes-relay pair --pair-qr 'hermes-relay://pair?payload=...'\n"
               "precedence: --pair-qr, then --remote/CODE/--code, then HERMES_RELAY_PAIR_QR, "
               "then HERMES_RELAY_URL with HERMES_RELAY_CODE (or a prompt on a terminal).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("code_arg", nargs="?", metavar="CODE", help="the 6-character pairing code")
    p.add_argument("--code", help="the pairing code (same as CODE)")
    p.add_argument("--remote", metavar="URL", help="relay URL, ws://HOST:PORT or wss://HOST[:PORT] (env HERMES_RELAY_URL)")
    p.add_argument("--pair-qr", metavar="INVITE",
                   help="an invite from hermes-pair: JSON, base64 or hermes-relay://pair?payload=... "
                        "(env HERMES_RELAY_PAIR_QR); wins over --remote and --code")
    p.add_argument("--name", metavar="DEVICE_NAME", help="how this computer is listed on the relay (default: host name)")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    params, target = build_request(args, ctx)
    ctx.err(ctx.style.dim(f"Pairing {target}…"))

    def on_notify(method: str, notify: dict[str, Any]) -> None:
        if method == "pair.progress" and isinstance(notify.get("line"), str):
            from hermes_relay.cli.render import printable

            line = printable(notify["line"])
            ctx.err(ctx.style.warn(line) if notify.get("kind") == "warn" else line)
            ctx.flush()

    with ctx.client() as client:
        result = client.call("pair.start", params, timeout=PAIR_TIMEOUT, on_notify=on_notify)
    if getattr(args, "json", False):
        ctx.print_json(result)
    else:
        for line in success_lines(result, ctx, invite="invite" in params):
            ctx.out(line)
    return 0


def build_request(args: argparse.Namespace, ctx: Context) -> tuple[dict[str, Any], str]:
    """Validate the inputs and return (pair.start params, a description for the progress line).

    Raises UsageError or PayloadError (exit 2) before anything touches the agent.
    """
    env = ctx.env
    params: dict[str, Any] = {}
    if args.name is not None:
        params["device_name"] = _device_name(args.name)
    code_given = args.code_arg is not None or args.code is not None
    # A mistyped code fails first, whatever else is missing (unless --pair-qr overrides it anyway).
    given_code = _given_code(args) if args.pair_qr is None else None
    invite = args.pair_qr
    if invite is None and args.remote is None and not code_given:
        invite = env.get("HERMES_RELAY_PAIR_QR") or None
    if invite is not None:
        from hermes_relay.core import payload

        parsed = payload.parse(invite)
        if args.pair_qr is not None and (args.remote is not None or code_given):
            ctx.err("(--pair-qr given: ignoring --remote and the code)")
        params["invite"] = invite.strip()
        routes = len(parsed.routes)
        return params, f"from the invite ({routes} route{'s' if routes != 1 else ''})"

    from hermes_relay.core.routes import DEFAULT_RELAY_PORT, normalize_relay_url

    raw_url = args.remote if args.remote is not None else env.get("HERMES_RELAY_URL")
    if not raw_url:
        raise UsageError(
            "no relay URL: pass --remote ws://HOST:8767 or set HERMES_RELAY_URL",
            hint="or pair from an invite with `hermes-relay pair --pair-qr INVITE`",
        )
    url, port_added = normalize_relay_url(raw_url)
    if port_added:
        ctx.err(f"(no port given: using {DEFAULT_RELAY_PORT})")
    params["url"] = url
    params["code"] = given_code or _other_code(ctx, url)
    return params, f"with {url}"


def _given_code(args: argparse.Namespace) -> str | None:
    given = [c for c in (args.code_arg, args.code) if c is not None]
    if not given:
        return None
    from hermes_relay.core import codes

    cleaned = [codes.validate_code(_strip_paste_markers(c)) for c in given]
    if len(set(cleaned)) > 1:
        raise UsageError(f"two different pairing codes given ({cleaned[0]} and {cleaned[1]}); pass one")
    return cleaned[0]


def _other_code(ctx: Context, url: str) -> str:
    """The code from HERMES_RELAY_CODE, or typed at the terminal prompt."""
    from hermes_relay.core import codes

    env_code = ctx.env.get("HERMES_RELAY_CODE")
    if env_code:
        return codes.validate_code(env_code)
    stdin = ctx.stdin
    if stdin is None or not _isatty(stdin):
        raise UsageError(
            "No TTY for interactive pairing. Pass the code (`hermes-relay pair CODE --remote URL`), "
            "use --code CODE, set HERMES_RELAY_CODE, or pair from an invite with --pair-qr INVITE."
        )
    return prompt_for_code(url, stdin=stdin, stderr=ctx.stderr)


def prompt_for_code(url: str, *, stdin: TextIO, stderr: TextIO, attempts: int = CODE_ATTEMPTS) -> str:
    """Ask for the code on the terminal, cleaning pasted junk and echoing the code it will use.

    Bracketed paste is switched off first so a paste arrives without ``ESC[200~`` markers. It is
    not switched back on: the shell's line editor (readline, zle, fish) turns it on again each
    time it draws a prompt, and a script reading plain lines after us must not get the markers.
    """
    from hermes_relay.cli.render import printable
    from hermes_relay.core import codes

    if _isatty(stderr):
        stderr.write(BRACKETED_PASTE_OFF)
    stderr.write(f"Relay: {url}\n")
    stderr.write("Need a pairing code — run `hermes-pair` on the relay host.\n")
    stderr.write("(Paste works; cleaned code shown before submit.)\n")
    for _ in range(attempts):
        stderr.write("Pairing code (6 chars): ")
        stderr.flush()
        raw = stdin.readline()
        if not raw:
            stderr.write("\n")
            raise UsageError("no pairing code entered (end of input)")
        raw = raw.rstrip("\r\n")
        cleaned = codes.clean_code(_strip_paste_markers(raw))
        if codes.is_valid_code(cleaned):
            stderr.write(f"  → using code: {cleaned}\n")
            return cleaned
        stderr.write(
            f'  invalid — need 6 chars of A-Z or 0-9. Got "{printable(raw)}" '
            f"({len(cleaned)} valid chars after strip). Try typing it manually.\n"
        )
    raise UsageError(f"no valid pairing code after {attempts} attempts",
                     hint="run `hermes-pair` on the relay host for a fresh code, then pass it as an argument")


def success_lines(result: dict[str, Any], ctx: Context, *, invite: bool) -> list[str]:
    """The stdout block after a successful pairing."""
    from hermes_relay.cli import render
    from hermes_relay.core import paths

    now = ctx.now()
    store = render.tilde(str(result.get("store") or paths.sessions_file(ctx.env)), str(paths.home_dir(ctx.env)))
    lines = [ctx.style.ok("✓") + f" Paired. Token stored in {store}"]
    lines.append(f"  Server: {render.printable(str(result.get('server_version') or '(unknown)'))}")
    lines.append(f"  Relay: {result.get('url')}")
    route = result.get("route")
    if isinstance(route, dict):
        lines.append(f"  Route: {route.get('label') or route.get('role') or '?'} ({route.get('url')})")
    expires = render.expiry(result.get("expires_at"), now)
    session = {"never": "never expires", "expired": "already expired", "unknown": "expiry unknown"}
    lines.append(f"  Session: {session.get(expires, f'expires {expires}')}")
    grants = result.get("grants")
    if isinstance(grants, dict) and grants:
        lines.append(f"  Grants: {render.grants_text(grants, now)}")
    if invite:
        if result.get("verified") is True:
            lines.append("  Invite signature verified")
        else:
            note = result.get("verify_note") or "no signature could be checked"
            lines.append(ctx.style.warn(f"  Invite signature NOT verified: {note}"))
    return lines


def _strip_paste_markers(text: str) -> str:
    for marker in _BARE_PASTE_MARKERS:
        text = text.replace(marker, "")
    return text


def _device_name(raw: str) -> str:
    name = raw.strip()
    if not name or len(name) > MAX_DEVICE_NAME or not name.isprintable():
        raise UsageError(f"--name must be 1 to {MAX_DEVICE_NAME} printable characters on one line (got {raw!r})")
    return name


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
