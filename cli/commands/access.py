"""``hermes-relay access``: show or change what each relay host may do on this computer.

    hermes-relay access                      every paired relay's policy
    hermes-relay access [URL] PRESET         restricted | ask_every_time | standard | trusted | full_access
    hermes-relay access set CAP MODE [URL]   one capability: disabled | ask | allow

Reads and writes ``~/.hermes/desktop-host-access.json`` directly (no agent needed): the agent
re-reads the file within 2 s. ``full_access`` lets the relay host do anything, so it needs ``--yes``.
"""

from __future__ import annotations

import argparse
from typing import Any

from hermes_relay.cli.context import Context, add_common_flags
from hermes_relay.core.errors import AmbiguousError, NotPairedError, UsageError

PRESET_NAMES = ("restricted", "ask_every_time", "standard", "trusted", "full_access")
PRESET_WORDS = frozenset((*PRESET_NAMES, "ask", "structured", "custom", "ask-every-time", "full-access"))
FULL_ACCESS_WARNING = ("full_access lets the relay host run any command, read and change any file, and use "
                       "the screen, USB devices, microphone and camera without asking")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "access", help="show or change what a relay host may do on this computer",
        description="Show or change the desktop access policy per relay host. Presets: restricted "
                    "(nothing), ask_every_time (ask for each call), standard (files only), trusted "
                    "(commands and files), full_access (everything; needs --yes). "
                    "`access set CAP MODE [URL]` changes one capability (commands, files, screen_input, "
                    "usb, microphone, camera) to disabled, ask or allow.")
    p.add_argument("words", nargs="*", metavar="[URL] [PRESET] | set CAP MODE [URL]",
                   help="what to show or change")
    p.add_argument("--yes", action="store_true", help="confirm full_access")
    add_common_flags(p)
    p.set_defaults(run=run)


def _paired(ctx: Context) -> list[str]:
    from hermes_relay.core import paths
    from hermes_relay.core.record import owner_urls
    from hermes_relay.core.store import SessionStore

    sessions = SessionStore(paths.sessions_file(ctx.env)).sessions()
    return owner_urls(sessions)


def _consented(ctx: Context, url: str) -> bool:
    from hermes_relay.core import paths
    from hermes_relay.core.store import SessionStore, resolve_in

    found = resolve_in(SessionStore(paths.sessions_file(ctx.env)).sessions(), url)
    return bool(found and found[1].get("tools_consented") is True)


def _one_url(ctx: Context, url: str | None) -> str:
    from hermes_relay.cli import relays
    from hermes_relay.core import policy

    if url is not None:
        if "://" not in url:  # a relay name given with `hermes-relay rename`
            url = relays.control(ctx).url_for(url) or url
        if policy.canonical_url(url) is None:
            raise UsageError(f"{url!r} is not a relay URL",
                             hint="use the ws:// or wss:// URL `hermes-relay status` shows")
        from hermes_relay.core import paths
        from hermes_relay.core.store import SessionStore, resolve_in

        # One of a pairing's other routes names the pairing: the agent keys its policy by the stored URL.
        found = resolve_in(SessionStore(paths.sessions_file(ctx.env)).sessions(), url)
        return found[0] if found is not None else url
    chosen = relays.resolve(ctx, None)  # HERMES_RELAY_URL, else the default relay (`hermes-relay use`)
    if chosen is not None:
        return _one_url(ctx, chosen)
    paired = _paired(ctx)
    if not paired:
        raise NotPairedError("this computer is not paired with any relay; name the relay URL",
                             hint="hermes-relay access ws://HOST:8767 PRESET")
    if len(paired) > 1:
        raise AmbiguousError(f"{len(paired)} relays are paired; name the one to change",
                             hint="paired: " + ", ".join(paired))
    return paired[0]


def _names(ctx: Context) -> Any:
    from hermes_relay.cli import relays

    return relays.control(ctx)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from hermes_relay.core import policy

    words = list(args.words)
    path = policy.policy_file(ctx.env)
    if words and words[0] == "set":
        if len(words) not in (3, 4):
            raise UsageError("usage: hermes-relay access set CAP MODE [URL]",
                             hint="CAP: " + ", ".join(policy.CAPABILITIES) + "; MODE: disabled, ask, allow")
        cap, mode = words[1].lower(), words[2].lower()
        if cap not in policy.CAPABILITIES:
            raise UsageError(f"unknown capability {words[1]!r}", hint="use one of: " + ", ".join(policy.CAPABILITIES))
        if mode not in policy.CAP_MODES:
            raise UsageError(f"unknown capability mode {words[2]!r}", hint="use one of: disabled, ask, allow")
        target = _one_url(ctx, words[3] if len(words) == 4 else None)
        host = policy.set_capability(path, target, cap, mode, now=ctx.now())
        return _changed(ctx, args, target, host)
    if len(words) > 2:
        raise UsageError("too many arguments", hint="hermes-relay access [URL] [PRESET]")
    url: str | None = None
    preset: str | None = None
    for word in words:
        if "://" in word:
            url = word
        elif url is None and word.lower() not in PRESET_WORDS and _names(ctx).url_for(word):
            url = _names(ctx).url_for(word)  # a relay's name (names are never preset words)
        elif preset is None:
            preset = word
        else:
            raise UsageError(f"{word!r} is neither a relay URL nor the only preset",
                             hint="hermes-relay access [URL] [PRESET]")
    if preset is None:
        return _show(ctx, args, url)
    mode = policy.normalize_mode(preset)
    if mode == policy.CUSTOM:
        raise UsageError("custom is not a preset: change single capabilities with `hermes-relay access set CAP MODE`")
    url = _one_url(ctx, url)
    if mode == policy.FULL_ACCESS and not args.yes:
        raise UsageError(FULL_ACCESS_WARNING, hint=f"if you mean it: hermes-relay access {url} full_access --yes")
    host = policy.set_mode(path, url, mode, now=ctx.now())
    return _changed(ctx, args, url, host)


def _changed(ctx: Context, args: argparse.Namespace, url: str, host: Any) -> int:
    from hermes_relay.core import policy

    key = policy.canonical_url(url)
    if getattr(args, "json", False):
        ctx.print_json({"url": key, "access_mode": host.access_mode, "capabilities": host.capabilities})
        return 0
    ctx.out(ctx.style.ok("✓") + f" {key}: {host.label}")
    ctx.out("  " + _caps_text(host.capabilities))
    ctx.out(ctx.style.dim("the agent applies it within 2 s"))
    return 0


def _caps_text(caps: dict[str, str]) -> str:
    from hermes_relay.core import policy

    return ", ".join(f"{c} {caps[c]}" for c in policy.CAPABILITIES)


def _show(ctx: Context, args: argparse.Namespace, url: str | None) -> int:
    from hermes_relay.core import policy

    policies = policy.load(policy.policy_file(ctx.env))
    if url is not None:
        if policy.canonical_url(url) is None:
            raise UsageError(f"{url!r} is not a relay URL", hint="use the ws:// or wss:// URL `hermes-relay status` shows")
        urls = [url]
    else:
        urls = _paired(ctx) or []
        keys = {policy.canonical_url(u) for u in urls}
        urls += [k for k in policies.hosts if k not in keys]
    hosts = []
    for u in urls:
        legacy = _consented(ctx, u)
        host = policies.for_url(u, legacy_consented=legacy)
        hosts.append({"url": policy.canonical_url(u), "access_mode": host.access_mode, "label": host.label,
                      "capabilities": host.capabilities,
                      "legacy_consent": legacy and host.access_mode != policies.for_url(u).access_mode,
                      "updated_at": host.updated_at})
    if getattr(args, "json", False):
        ctx.print_json({"file": str(policy.policy_file(ctx.env)), "hosts": hosts})
        return 0
    for line in show_lines(hosts, ctx):
        ctx.out(line)
    return 0


def show_lines(hosts: list[dict[str, Any]], ctx: Context) -> list[str]:
    from hermes_relay.cli import render

    style = ctx.style
    if not hosts:
        return ["(no relay hosts: pair with `hermes-relay pair` first; unknown hosts are restricted)"]
    lines: list[str] = []
    for host in hosts:
        title = f"{host['url']}: {host['label']}"
        if host.get("legacy_consent"):
            title += " (from an earlier tools consent)"
        lines.append(style.bold(title))
        rows = [[cap, _paint(mode, style)] for cap, mode in host["capabilities"].items()]
        lines.extend(render.table(("CAPABILITY", "ACCESS"), rows, style=style))
        lines.append("")
    lines.append(style.dim("presets: hermes-relay access [URL] restricted|ask_every_time|standard|trusted|full_access"))
    lines.append(style.dim("one capability: hermes-relay access set CAP disabled|ask|allow [URL]"))
    return lines


def _paint(mode: str, style: Any) -> str:
    return {"allow": style.ok, "ask": style.warn}.get(mode, style.dim)(mode)


