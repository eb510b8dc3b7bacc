"""``pair`` on a relay that is already paired: say so, ask, and decide what the old pairing hands over.

Before the code is spent the CLI asks the agent (``pair.check``) which stored pairing this one would
replace: the same URL, or the same relay under another spelling (``localhost`` and ``127.0.0.1``, a
trailing ``/ws``), recognised by its certificate pin or the ``relay_id`` it shows. It prints
"already paired as NAME since WHEN; replacing it" and, on a terminal, asks first (``--yes`` skips
the question; without a terminal it goes ahead: the fresh code is the user's intent, and the old
session is replaced either way by the relay).

Under another spelling the old pairing's desktop access (policy, roots, jobs) moves to the new URL
silently only when a matching certificate pin authenticates the relay. Over ws:// the relay id is
only a claim, so the user is asked ("carry over the desktop access (trusted, roots ~/src) from
URL? [y/N]"), ``--carry-over`` says yes for scripts, and otherwise the new pairing starts at
``ask every time``.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import TYPE_CHECKING, Any

from .confirm import _isatty

if TYPE_CHECKING:
    from ..core.apitypes import PairStartParams

RESTRICTED_LABEL = "ask every time"
NOTHING_TO_CARRY = (RESTRICTED_LABEL, "restricted")  # what a fresh pairing starts at, or less
ALREADY = "already paired as "


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--yes", action="store_true",
                        help="replace an existing pairing of this relay without asking (for scripts)")
    parser.add_argument("--carry-over", action="store_true",
                        help="when the relay was paired under another URL and only its relay id (not a "
                             "certificate pin) says it is the same, keep its desktop access without asking")


def replacing_line(replaces: dict[str, Any], target: set[str]) -> str:
    name = replaces.get("device_name") or socket.gethostname() or "this computer"
    at = replaces.get("paired_at")
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if isinstance(at, (int, float)) else "earlier"
    where = "" if replaces.get("url") in target else f" at {replaces.get('url')}"
    return f"{ALREADY}{name}{where} since {since}; replacing it"


def target_urls(params: PairStartParams) -> set[str]:
    if "invite" in params:
        from ..core import payload

        return {r.url for r in payload.parse(params["invite"]).routes}
    return {str(params.get("url"))}


def decide(args: argparse.Namespace, ctx: Any, client: Any, params: PairStartParams) -> bool:
    """Ask what must be asked before ``pair.start``; adds ``carry_over`` to ``params`` when agreed.

    Returns False when the user declined to replace the existing pairing (nothing was sent)."""
    from .local import paired_urls, stored_sessions

    sessions = stored_sessions(ctx)
    if not sessions or not paired_urls(sessions):
        return True  # a first pairing: nothing to replace, no extra connection
    replaces = client.pair_check(params, timeout=60.0).get("replaces")
    if not isinstance(replaces, dict):
        return True
    target = target_urls(params)
    ctx.err(replacing_line(replaces, target))
    interactive = ctx.stdin is not None and _isatty(ctx.stdin)
    if interactive and not args.yes and not _ask(ctx, "Replace it?", default=True):
        return False
    moved = replaces.get("url") not in target
    access = str(replaces.get("access") or "")
    if moved and not replaces.get("authenticated") and access and access not in NOTHING_TO_CARRY:
        question = f"carry over the desktop access ({access}) from {replaces.get('url')}?"
        if args.carry_over or (interactive and not args.yes and _ask(ctx, question, default=False)):
            params["carry_over"] = True
    return True


def _ask(ctx: Any, question: str, *, default: bool) -> bool:
    ctx.stderr.write(f"{question} {'[Y/n]' if default else '[y/N]'} ")
    ctx.flush()
    answer = ctx.stdin.readline()
    if not answer:
        ctx.stderr.write("\n")
        return False
    answer = answer.strip().lower()
    return default if not answer else answer in ("y", "yes")


def result_lines(result: dict[str, Any]) -> list[str]:
    """What the success block says about the pairing this one replaced under another URL."""
    replaced = result.get("replaced")
    if not isinstance(replaced, dict) or replaced.get("url") == result.get("url"):
        return []
    old, access = replaced.get("url"), replaced.get("access") or RESTRICTED_LABEL
    if replaced.get("carried_over"):
        why = "the certificate pin matches" if replaced.get("authenticated") else "as you confirmed"
        return [f"  Replaced: {old} (the same relay); its desktop access ({access}) carried over, {why}"]
    if access in NOTHING_TO_CARRY:
        return [f"  Replaced: {old} (the same relay)"]
    return [f"  Replaced: {old} (the same relay); its desktop access ({access}) was not carried over "
            f"(over ws:// the relay's identity is only a claim): this pairing starts at {RESTRICTED_LABEL}; "
            f"`hermes-relay access {result.get('url')} …` changes it"]
