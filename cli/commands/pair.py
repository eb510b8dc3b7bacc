"""``hermes-relay pair``: trade a one-time code (or an invite) for a stored session, via the agent.

Everything that can be checked locally is checked before the agent is contacted or started, so a
mistyped code, URL or invite fails at once with exit 2: the code (core.codes), the relay URL
(core.routes) and the invite (core.payload). The agent does the network work (probing routes,
the auth handshake, writing the store) and streams one ``pair.progress`` line per step, which is
printed as it arrives.

Which input wins: an explicit ``--pair-qr``; then an explicit ``--remote`` or code; then
``HERMES_RELAY_PAIR_QR``; then ``HERMES_RELAY_URL`` with ``HERMES_RELAY_CODE`` or a prompt. So a
flag always beats the environment, and an invite beats a URL given the same way.

The interactive prompt cleans pasted text (bracketed-paste markers, ANSI, spaces, a pasted
``Code :`` label) and echoes the code it will use, because terminals that ignore the bracketed-paste
switch are common (anchor-cli §12a). Before asking it checks that the relay answers at all, so
nobody types a code for a relay that is not there.

A code given on the command line is visible to other local users in the process list: it is
overwritten in this process's argument memory at once (cli/proctitle.py), a warning names the safer
forms when other users are present, and ``--code -`` (stdin) or ``HERMES_RELAY_CODE`` avoid it.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any, TextIO

from ...core.errors import AgentNotRunningError, HermesError, UsageError
from ...core.wire import MAX_DEVICE_NAME
from .. import repairing
from ..context import Context, add_common_flags

if TYPE_CHECKING:
    from ...core.apitypes import PairProgress, PairStartParams

REACH_TIMEOUT = 4.0  # seconds for the TCP check before the interactive prompt (a route probe's budget)
PAIR_TIMEOUT = 60.0  # seconds: route probes (4 s each, tiered) plus the auth handshake, with margin
CODE_ATTEMPTS = 3  # as the reference CLI
BRACKETED_PASTE_OFF = "\x1b[?2004l"
# Bracketed-paste markers whose ESC was eaten on the way (Windows Terminal, old WezTerm: anchor-cli
# §12a). Left in, their digits would become part of the code ("200F3W7EY201").
_BARE_PASTE_MARKERS = ("[200~", "[201~")
_CODE_LABEL = re.compile(r"^\s*(?:\x1b\[200~)?\s*code\s*:\s*", re.IGNORECASE)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pair",
        help="pair this computer with a relay (one-time code or invite)",
        description="Pair this computer with a Hermes relay. Get a code or invite by running "
                    "`hermes-pair` on the relay host; the code is valid for 10 minutes, once.",
        epilog="examples:\n"
               "  hermes-relay pair --remote ws://192.168.1.5:8767           (asks for the code)\n"
               "  hermes-relay pair --pair-qr 'hermes-relay://pair?payload=...'\n"
               "  hermes-relay pair --code - --remote ws://192.168.1.5:8767   (code on stdin: not in `ps`)\n"
               "  HERMES_RELAY_CODE=F3W7EY hermes-relay pair --remote ws://192.168.1.5:8767\n"
               "precedence: --pair-qr, then --remote/CODE/--code, then HERMES_RELAY_PAIR_QR, "
               "then HERMES_RELAY_URL with HERMES_RELAY_CODE (or a prompt on a terminal).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("code_arg", nargs="?", metavar="CODE", help="the 6-character pairing code")
    p.add_argument("--code", help="the pairing code (same as CODE); `-` reads it from stdin, out of sight of `ps`")
    p.add_argument("--remote", metavar="URL", help="relay URL, ws://HOST:PORT or wss://HOST[:PORT] (env HERMES_RELAY_URL)")
    p.add_argument("--pair-qr", metavar="INVITE",
                   help="an invite from hermes-pair: JSON, base64 or hermes-relay://pair?payload=... "
                        "(env HERMES_RELAY_PAIR_QR); wins over --remote and --code")
    p.add_argument("--name", metavar="DEVICE_NAME", help="how this computer is listed on the relay (default: host name)")
    p.add_argument("--ignore-signature", action="store_true",
                   help="pair from an invite even though its signature does not match this relay host's key "
                        "(only if you know why it was altered)")
    repairing.add_flags(p)
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    _hide_code_from_ps(args, ctx)
    params, target = build_request(args, ctx)
    ctx.err(ctx.style.dim(f"Pairing {target}…"))

    said: list[bool] = []  # the "already paired as …" line was printed by the check already

    def on_progress(notify: PairProgress) -> None:
        if isinstance(notify.get("line"), str):
            from ..render import printable

            if said and notify["line"].startswith(repairing.ALREADY):
                return

            line = printable(notify["line"])
            ctx.err(ctx.style.warn(line) if notify.get("kind") == "warn" else line)
            ctx.flush()

    client, started = _agent(ctx)
    with client:
        if not repairing.decide(args, ctx, client, params):
            ctx.err("not paired: the existing pairing is kept (the code was not used)")
            return 1
        said.append(True)
        try:
            result = client.pair_start(params, timeout=PAIR_TIMEOUT, on_progress=on_progress)
        except HermesError:
            if started:
                _stop_if_nothing_paired(ctx, client)
            raise
    if getattr(args, "json", False):
        ctx.print_json(result)
    else:
        for line in success_lines(result, ctx, invite="invite" in params):
            ctx.out(line)
    return 0


def _agent(ctx: Context) -> tuple[Any, bool]:
    """A client, and whether this command had to start the agent for it."""
    try:
        return ctx.client(autostart=False), False
    except AgentNotRunningError:
        if not ctx.autostart:
            raise
    return ctx.client(), True


def _stop_if_nothing_paired(ctx: Context, client: Any) -> None:
    """After a failed first pairing, stop the agent this command started: it has nothing to keep connected."""
    from ..local import paired_urls, stored_sessions

    sessions = stored_sessions(ctx)
    if sessions is None or paired_urls(sessions):
        return
    try:
        client.stop(timeout=5.0)
    except HermesError:
        pass


def build_request(args: argparse.Namespace, ctx: Context) -> tuple[PairStartParams, str]:
    """Validate the inputs and return (pair.start params, a description for the progress line).

    Raises UsageError or PayloadError (exit 2) before anything touches the agent.
    """
    env = ctx.env
    params: PairStartParams = {}
    if args.name is not None:
        params["device_name"] = _device_name(args.name)
    if getattr(args, "ignore_signature", False):
        params["ignore_signature"] = True
    _refuse_url_as_code(args)
    if args.code == "-":
        args.code = _code_from_stdin(ctx)
    code_given = args.code_arg is not None or args.code is not None
    # A mistyped code fails first, whatever else is missing (unless --pair-qr overrides it anyway).
    given_code = _given_code(args) if args.pair_qr is None else None
    invite = args.pair_qr
    if invite is None and args.remote is None and not code_given:
        invite = env.get("HERMES_RELAY_PAIR_QR") or None
    if invite is not None:
        from ...core import payload

        parsed = payload.parse(invite)
        if args.pair_qr is not None and (args.remote is not None or code_given):
            ctx.err("(--pair-qr given: ignoring --remote and the code)")
        params["invite"] = invite.strip()
        routes = len(parsed.routes)
        return params, f"from the invite ({routes} route{'s' if routes != 1 else ''})"

    from ...core.routes import DEFAULT_RELAY_PORT, normalize_relay_url

    raw_url = args.remote if args.remote is not None else env.get("HERMES_RELAY_URL")
    if not raw_url:
        raise UsageError(
            "no relay URL: pass --remote ws://HOST:8767 or set HERMES_RELAY_URL",
            hint="or pair from an invite with `hermes-relay pair --pair-qr INVITE`",
        )
    if "://" not in raw_url:  # a relay's name (`hermes-relay rename`): pair it again
        from .. import relays

        raw_url = relays.control(ctx).url_for(raw_url) or raw_url
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
    from ...core import codes

    cleaned = [codes.validate_code(_strip_paste_markers(c)) for c in given]
    if len(set(cleaned)) > 1:
        raise UsageError(f"two different pairing codes given ({cleaned[0]} and {cleaned[1]}); pass one")
    return cleaned[0]


def _other_code(ctx: Context, url: str) -> str:
    """The code from HERMES_RELAY_CODE, or typed at the terminal prompt."""
    from ...core import codes

    env_code = ctx.env.get("HERMES_RELAY_CODE")
    if env_code:
        return codes.validate_code(env_code)
    stdin = ctx.stdin
    if stdin is None or not _isatty(stdin):
        raise UsageError(
            "No TTY for interactive pairing. Pass the code on stdin (`--code -`), set HERMES_RELAY_CODE, "
            "or pair from an invite with --pair-qr INVITE (a code on the command line shows in `ps`)."
        )
    check_reachable(url)
    return prompt_for_code(url, stdin=stdin, stderr=ctx.stderr)


def check_reachable(url: str, timeout: float = REACH_TIMEOUT) -> None:
    """Raise a TransportError naming the problem when nothing accepts a TCP connection at the relay."""
    import socket

    from ...core.errors import ConnectRefusedError, ConnectTimeoutError, HostNotFoundError, TransportError
    from ...core.routes import host_port

    host, port = host_port(url)
    hint = "check the URL and that hermes-relay-server runs there; `hermes-relay doctor` checks each step"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror:
        raise HostNotFoundError(f"cannot reach {url}: the host name {host} does not resolve", hint=hint) from None
    except TimeoutError:
        raise ConnectTimeoutError(f"cannot reach {url}: nothing answered within {timeout:g}s "
                                  "(a firewall, or the wrong address)", hint=hint) from None
    except ConnectionRefusedError:
        raise ConnectRefusedError(f"cannot reach {url}: connection refused (nothing listens on port {port})",
                                  hint=hint) from None
    except OSError as exc:  # unreachable network or host, ...: not a refusal
        raise TransportError(f"cannot reach {url}: {exc.strerror or exc}", hint=hint) from None


def _refuse_url_as_code(args: argparse.Namespace) -> None:
    """``hermes-relay pair ws://host:8767``: the URL went where the code goes."""
    for value in (args.code_arg, args.code):
        if isinstance(value, str) and value.strip().lower().startswith(("ws://", "wss://", "http://", "https://")):
            raise UsageError(f"that is a relay URL: `hermes-relay pair --remote {value.strip()}` (it asks for the code)",
                             hint="get the code by running `hermes-pair` on the relay host")


def _code_from_stdin(ctx: Context) -> str:
    """``--code -``: one line from stdin (a pipe, a file or a terminal), never from the command line."""
    stdin = ctx.stdin
    line = stdin.readline() if stdin is not None else ""
    if not line.strip():
        raise UsageError("--code - read no code from stdin",
                         hint="e.g. `echo F3W7EY | hermes-relay pair --code - --remote URL`")
    return line.strip()


def _hide_code_from_ps(args: argparse.Namespace, ctx: Context) -> None:
    """Overwrite a code (or invite) from the command line in this process's arguments; warn if others could look."""
    given = [v for v in (args.code_arg, args.code, args.pair_qr) if isinstance(v, str) and v and v != "-"
             and not v.strip().lower().startswith(("ws://", "wss://", "http://", "https://"))]  # an invite holds a code
    if not given:
        return
    from .. import proctitle

    proctitle.scrub(given)
    if proctitle.other_users_present():
        ctx.err(ctx.style.warn(
            "warning: other users are on this machine and could read the code in the process list before it was "
            "hidden; use `--code -` (stdin), HERMES_RELAY_CODE or the prompt instead"))


def prompt_for_code(url: str, *, stdin: TextIO, stderr: TextIO, attempts: int = CODE_ATTEMPTS) -> str:
    """Ask for the code on the terminal, cleaning pasted junk and echoing the code it will use.

    Bracketed paste is switched off first so a paste arrives without ``ESC[200~`` markers. It is
    not switched back on: the shell's line editor (readline, zle, fish) turns it on again each
    time it draws a prompt, and a script reading plain lines after us must not get the markers.
    """
    from ...core import codes
    from ..render import printable

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
                     hint="run `hermes-pair` on the relay host for a fresh code, then pair again: it asks, or "
                          "paste it on stdin with `--code -`")


def success_lines(result: dict[str, Any], ctx: Context, *, invite: bool) -> list[str]:
    """The stdout block after a successful pairing."""
    from ...core import paths
    from .. import render

    now = ctx.now()
    store = render.tilde(str(result.get("store") or paths.sessions_file(ctx.env)), str(paths.home_dir(ctx.env)))
    lines = [ctx.style.ok("✓") + f" Paired. Token stored in {store}"]
    lines.append(f"  Server: {render.printable(str(result.get('server_version') or '(unknown)'))}")
    lines.append(f"  Relay: {result.get('url')}")
    lines.extend(repairing.result_lines(result))
    route = result.get("route")
    if isinstance(route, dict):
        lines.append(f"  Route: {route.get('label') or route.get('role') or '?'} ({route.get('url')})")
    expires = render.expiry(result.get("expires_at"), now)
    session = {"never": "never expires", "expired": "already expired", "unknown": "expiry unknown"}
    lines.append(f"  Session: {session.get(expires, f'expires {expires}')}")
    grants = result.get("grants")
    if isinstance(grants, dict) and grants:
        lines.append(f"  Grants: {render.grants_text(grants, now)}")
    pin = result.get("cert_pin_sha256")
    if isinstance(pin, str) and pin:
        lines.append(f"  Certificate pin: {pin} (trusted from now on; check it matches the relay's)")
    lines.extend(desktop_access_lines(str(result.get("url") or ""), ctx))
    if invite:
        note = str(result.get("verify_note") or "")
        if result.get("verified") is True:
            lines.append("  Invite signature verified")
        elif result.get("verified") is False:
            lines.append(ctx.style.warn(f"  Invite signature does NOT match: {render.printable(note)}"))
        elif "no signature" in note:
            lines.append(ctx.style.warn("  Invite signature: none (the invite is unsigned)"))
        else:
            lines.append("  Invite signature: not checkable here (normal)")
    return lines


_ACCESS_MEANING = {
    "ask_every_time": "This relay host may now ask to run commands and use files here; you approve each call "
                      "(`hermes-relay approvals`).",
    "ask": "This relay host cannot use this computer's desktop tools.",
    "structured": "This relay host may read and change files here without asking; commands are off, the screen "
                  "and USB ask (`hermes-relay approvals`).",
    "trusted": "This relay host may run commands and use files here without asking.",
    "full_access": "This relay host may do anything here without asking.",
    "custom": "See what this relay host may do: `hermes-relay access URL`.",
}


def desktop_access_lines(url: str, ctx: Context) -> list[str]:
    """What the new relay host may now do here (the agent starts a fresh pairing at ask_every_time) and how to change it."""
    import textwrap

    from ...core import policy
    from ...core.errors import HermesError

    try:
        host = policy.load(policy.policy_file(ctx.env)).for_url(url)
    except HermesError as exc:
        return [ctx.style.warn(f"  Desktop access: unknown ({exc.message})")]
    meaning = _ACCESS_MEANING.get(host.access_mode, _ACCESS_MEANING["custom"]).replace("URL", url)
    body = textwrap.wrap(meaning, 76, break_on_hyphens=False, break_long_words=False)
    return [f"  Desktop access: {host.label}", *(f"    {line}" for line in body),
            f"    Change it: hermes-relay access {url} standard|trusted|restricted"]


def _strip_paste_markers(text: str) -> str:
    """Remove bare bracketed-paste markers and a pasted ``Code :`` label (as hermes-pair prints it)."""
    for marker in _BARE_PASTE_MARKERS:
        text = text.replace(marker, "")
    return _CODE_LABEL.sub("", text, count=1)


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
