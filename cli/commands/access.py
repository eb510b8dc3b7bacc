"""``hermes-relay access``: show or change what each relay host may do on this computer.

    hermes-relay access                      every paired relay's policy and roots
    hermes-relay access [URL] PRESET         restricted | ask_every_time | standard | workspace | trusted | full_access
    hermes-relay access set CAP MODE [URL]   one capability: disabled | ask | allow
    hermes-relay access [URL] --root DIR     add a root (--remove-root DIR, --reset-roots)

Reads and writes ``~/.hermes/desktop-host-access.json`` and the roots file directly (no agent
needed): the agent re-reads them within 2 s. Only paired relays can be named (``--force`` for
another). A running agent is told first, so its audit names ``hermes-relay access`` as the author;
when none runs, this command appends the audit record itself. ``full_access`` needs ``--yes``;
``workspace`` is refused where the system offers no sandbox for its commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...core.errors import AmbiguousError, NotPairedError, UsageError
from .. import consent
from ..context import Context, add_common_flags

PRESET_NAMES = ("restricted", "ask_every_time", "standard", "workspace", "trusted", "full_access")
PRESET_WORDS = frozenset((*PRESET_NAMES, "ask", "structured", "custom", "ask-every-time", "full-access"))
FULL_ACCESS_WARNING = ("full_access lets the relay host run any command, read and change any file (the agent's "
                       "own state included), and use the screen, USB devices, microphone and camera without asking")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "access", help="show or change what a relay host may do on this computer",
        description="Show or change the desktop access policy per relay host. Presets: restricted "
                    "(nothing), ask_every_time (ask for each call), standard (files only), workspace "
                    "(commands and files confined to the host's roots, no network), trusted (commands "
                    "with your full rights, files), full_access (everything; needs --yes). "
                    "`access set CAP MODE [URL]` changes one capability (commands, files, screen_input, "
                    "usb, microphone, camera) to disabled, ask or allow. Below full access, file tools "
                    "reach only the host's roots (default: your home directory without ~/.hermes).",
        epilog="examples:\n"
               "  hermes-relay access                       # every paired relay's policy\n"
               "  hermes-relay access standard              # the paired relay: files only\n"
               "  hermes-relay access ws://192.168.1.5:8767 trusted\n"
               "  hermes-relay access workspace --root ~/src/project\n"
               "  hermes-relay access set commands ask      # ask before each command\n"
               "  hermes-relay access full_access --yes",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="*", metavar="[URL] [PRESET] | set CAP MODE [URL]",
                   help="what to show or change")
    p.add_argument("--root", action="append", default=[], metavar="DIR", help="add a root for the host")
    p.add_argument("--remove-root", action="append", default=[], metavar="DIR", help="remove one of its roots")
    p.add_argument("--reset-roots", action="store_true", help="back to the default root (your home directory)")
    p.add_argument("--yes", action="store_true", help="confirm full_access")
    p.add_argument("--force", action="store_true", help="name a relay that is not paired with this computer")
    add_common_flags(p)
    p.set_defaults(run=run)


def _sessions(ctx: Context) -> dict[str, dict[str, Any]]:
    from ...core import paths
    from ...core.store import SessionStore

    return SessionStore(paths.sessions_file(ctx.env)).sessions()


def _consented(sessions: dict[str, dict[str, Any]], url: str) -> bool:
    from ...core.store import resolve_in

    found = resolve_in(sessions, url)
    return bool(found and found[1].get("tools_consented") is True)


def _check_url(url: str) -> None:
    from ...core import policy

    if policy.canonical_url(url) is None:
        raise UsageError(f"{url!r} is not a relay URL", hint="use the ws:// or wss:// URL `hermes-relay status` shows")


def _one_url(ctx: Context, url: str | None, force: bool) -> str:
    from ...core.record import owner_urls
    from ...core.store import resolve_in

    sessions = _sessions(ctx)
    if url is not None:
        if "://" not in url:  # a relay name given with `hermes-relay rename`
            url = _names(ctx).url_for(url) or url
        _check_url(url)
        # One of a pairing's other routes names the pairing: the agent keys its policy by the stored URL.
        found = resolve_in(sessions, url)
        if found is not None:
            return found[0]
        if not force:
            raise NotPairedError(f"{url} is not paired with this computer",
                                 hint="`hermes-relay status` lists the paired relays; "
                                      "--force sets a policy for another one anyway")
        return url
    from .. import relays

    chosen = relays.resolve(ctx, None)  # HERMES_RELAY_URL, else the default relay (`hermes-relay use`)
    if chosen is not None:
        return _one_url(ctx, chosen, force)
    paired = owner_urls(sessions)
    if not paired:
        raise NotPairedError("this computer is not paired with any relay; name the relay URL",
                             hint="hermes-relay access ws://HOST:8767 PRESET")
    if len(paired) > 1:
        raise AmbiguousError(f"{len(paired)} relays are paired; name the one to change",
                             hint="paired: " + ", ".join(paired))
    return paired[0]


def _names(ctx: Context) -> Any:
    from .. import relays

    return relays.control(ctx)


def _parse(args: argparse.Namespace, ctx: Context) -> tuple[str | None, str | None, tuple[str, str] | None]:
    """(url, preset, (capability, mode)) from the words, validated before anything is read or written."""
    from ...core import policy

    words = list(args.words)
    if words and words[0] == "set":
        if len(words) not in (3, 4):
            raise UsageError("usage: hermes-relay access set CAP MODE [URL]",
                             hint="CAP: " + ", ".join(policy.CAPABILITIES) + "; MODE: disabled, ask, allow")
        cap, mode = words[1].lower().replace("-", "_"), words[2].lower()  # screen-input, as the presets' spelling
        if cap not in policy.CAPABILITIES:
            raise UsageError(f"unknown capability {words[1]!r}", hint="use one of: " + ", ".join(policy.CAPABILITIES))
        if mode not in policy.CAP_MODES:
            raise UsageError(f"unknown capability mode {words[2]!r}", hint="use one of: disabled, ask, allow")
        named = words[3] if len(words) == 4 else None
        if named is not None and "://" not in named:
            named = _names(ctx).url_for(named) or named  # a relay's name
        if named is not None:
            _check_url(named)
        return named, None, (cap, mode)
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
    if url is not None:
        _check_url(url)
    if preset is not None:
        mode = policy.normalize_mode(preset)
        if mode == policy.CUSTOM:
            raise UsageError("custom is not a preset: change single capabilities with "
                             "`hermes-relay access set CAP MODE`")
        if mode == policy.WORKSPACE and not consent.sandbox_available(consent.abi(), sys.platform):
            raise UsageError("workspace needs a sandbox for its commands, and this system offers none "
                             "(no Landlock in this kernel)",
                             hint="choose standard (files only) or ask_every_time instead")
        preset = mode
    return url, preset, None


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import policy

    url, mode, single = _parse(args, ctx)
    changes_roots = bool(args.root or args.remove_root or args.reset_roots)
    if mode is None and single is None and not changes_roots:
        return _show(ctx, args, url)
    target = _one_url(ctx, url, args.force)
    if mode == policy.FULL_ACCESS and not args.yes:
        raise UsageError(FULL_ACCESS_WARNING, hint=f"if you mean it: hermes-relay access {target} full_access --yes")
    added = [_checked_root(ctx, raw) for raw in args.root]
    from .. import access_apply

    return access_apply.apply(ctx, args, target, mode, single, added)


def _checked_root(ctx: Context, raw: str) -> Any:
    from ...core import confine, roots

    return roots.check_root(raw, confine.protected_paths(ctx.env))


def _show(ctx: Context, args: argparse.Namespace, url: str | None) -> int:
    from ...core import policy, roots
    from ...core.record import owner_urls

    policies = policy.load(policy.policy_file(ctx.env))
    table = roots.load(roots.roots_file(ctx.env))
    sessions = _sessions(ctx)
    if url is not None:
        urls = [url]
    else:
        urls = owner_urls(sessions)
        keys = {policy.canonical_url(u) for u in urls}
        urls += [k for k in policies.hosts if k not in keys]
    hosts = [consent.host_view(policies, table, u, _consented(sessions, u), ctx.env) for u in urls]
    if getattr(args, "json", False):
        ctx.print_json({"file": str(policy.policy_file(ctx.env)), "hosts": hosts})
        return 0
    for line in show_lines(hosts, ctx):
        ctx.out(line)
    return 0


def show_lines(hosts: list[dict[str, Any]], ctx: Context) -> list[str]:
    from ...core import policy
    from .. import render

    style = ctx.style
    if not hosts:
        return ["(no relay hosts: pair with `hermes-relay pair` first; unknown hosts are restricted)"]
    abi = consent.abi()
    lines: list[str] = []
    for host in hosts:
        lines.append(style.bold(f"{host['url']}: {host['label']}"))
        lines.append("  " + consent.describe(host, abi, sys.platform))
        rows = [[cap, _paint(mode, style) + ("" if cap in policy.SERVED_HERE else style.dim("  (no tools here)"))]
                for cap, mode in host["capabilities"].items()]
        lines.extend(render.table(("CAPABILITY", "ACCESS"), rows, style=style))
        lines.append("  " + consent.roots_line(host))
        lines.append("")
    lines.append(style.dim("presets: hermes-relay access [URL] " + "|".join(PRESET_NAMES)))
    lines.append(style.dim("one capability: hermes-relay access set CAP disabled|ask|allow [URL]"))
    lines.append(style.dim("roots: hermes-relay access [URL] --root DIR | --remove-root DIR | --reset-roots"))
    return lines


def _paint(mode: str, style: Any) -> str:
    return {"allow": style.ok, "ask": style.warn}.get(mode, style.dim)(mode)
