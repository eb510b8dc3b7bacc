"""``hermes-relay forget URL``: remove a pairing and everything this computer keeps about it.

The pairing is looked up in the store first (so a wrong URL fails without touching the agent), the
user confirms on a terminal (``--yes`` for scripts), then the agent revokes the session on the relay
when it can reach it and removes the record, its routes and pins, its verdict, refresh token and
desktop access policy and roots (agent/forget.py). When the relay cannot be reached the local
removal still happens and the output says the session stays valid on the relay, and how to end it there.

A URL that is not paired but still has a desktop access policy or roots (set with ``access
--force``, or left by another client) is forgotten here, without the agent: only those entries go.
"""

from __future__ import annotations

import argparse
from typing import Any

from ...core.errors import EXIT_FAILURE, NotPairedError
from ...core.wire import TOKEN_PREFIX_LEN
from ..confirm import add_yes_flag, confirm
from ..context import Context, add_common_flags

FORGET_TIMEOUT = 30.0  # seconds: route probes plus one HTTP request to the relay
_LABEL_WIDTH = 9


def register(sub: Any) -> None:
    p = sub.add_parser(
        "forget", help="remove a pairing (revokes its session on the relay first)",
        description="Remove the pairing with a relay: its session is revoked on the relay when it can be "
                    "reached, then the stored session, its alternate routes, certificate pins, refresh "
                    "token and desktop access policy are removed from this computer.",
        epilog="examples:\n  hermes-relay forget ws://192.168.1.5:8767\n"
               "  hermes-relay forget ws://192.168.1.5:8767 --yes   (in scripts)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL|NAME", help="the relay URL shown by `hermes-relay status`, or its name "
                                                   "(never the default relay: forget needs its target named)")
    add_yes_flag(p)
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ...core.record import from_dict
    from .. import relays
    from ..local import find_pairing

    url = relays.explicit(ctx, args.url)  # a URL or a relay name; never the default relay: forget names its target
    try:
        owner, rec = find_pairing(ctx, url, args.url.strip())
    except NotPairedError as exc:
        try:
            owner, rec = _paused(ctx, url, exc)  # removed from the store by another client, kept by the agent
        except NotPairedError:
            named = args.url.strip() if "://" in args.url else url  # a policy key is the URL as it was given
            if not _policy_only(ctx, named):
                raise
            return _forget_policy_only(ctx, args, named)
    token = from_dict(owner, rec).token or ""
    revokes = f"revokes its session {token[:TOKEN_PREFIX_LEN]} on the relay and " if token else ""
    question = f"Forget {owner}? This {revokes}removes the pairing, its routes and pins from this computer."
    if not confirm(ctx, question, yes=args.yes, what="forget"):
        ctx.err("not forgotten: nothing changed")
        return EXIT_FAILURE
    with ctx.client() as client:
        result = client.forget(owner, timeout=FORGET_TIMEOUT)
    _forget_names(ctx, owner)
    if getattr(args, "json", False):
        ctx.print_json(result)
        return 0
    for line in result_lines(result, ctx):
        ctx.out(line)
    return 0


def _policy_only(ctx: Context, url: str) -> bool:
    from ...core import policy, roots

    key = policy.canonical_url(url)
    if key is None:
        return False
    return key in policy.load(policy.policy_file(ctx.env)).hosts or key in roots.load(roots.roots_file(ctx.env))


def _forget_policy_only(ctx: Context, args: argparse.Namespace, url: str) -> int:
    """A URL with a policy or roots but no pairing: remove those (the agent is only told, for its audit)."""
    from ...core import policy, policy_log, roots
    from .. import access_apply

    key = policy.canonical_url(url) or url
    question = f"Forget {key}? It is not paired; this removes its desktop access policy and roots from this computer."
    if not confirm(ctx, question, yes=args.yes, what="forget"):
        ctx.err("not forgotten: nothing changed")
        return EXIT_FAILURE
    before = access_apply.snapshot(ctx)
    recorded = access_apply.announce(ctx, key, "forget")
    removed = []
    if policy.forget(policy.policy_file(ctx.env), [key]):
        removed.append("desktop access policy")
    if roots.forget(roots.roots_file(ctx.env), [key]):
        removed.append("desktop roots")
    if not recorded:
        access_apply.audit_locally(ctx, before, access_apply.snapshot(ctx), policy_log.BY_FORGET)
    result = {"url": key, "prefix": None, "relay": {"status": "skipped"}, "removed": removed}
    if getattr(args, "json", False):
        ctx.print_json(result)
        return 0
    ctx.out(ctx.style.ok("✓") + f" forgot {key}")
    ctx.out(_field("relay", "not paired: nothing to revoke"))
    ctx.out(_field("removed", ", ".join(removed) if removed else "nothing"))
    return 0


def _paused(ctx: Context, url: str, missing: NotPairedError) -> tuple[str, dict[str, Any]]:
    """The pairing the agent keeps paused for ``url`` (another client removed it from the store), read
    from the agent's file without contacting it; NotPairedError when there is none."""
    from ...core import fileio, paths
    from ...core.errors import StateError

    try:
        doc = fileio.read_json_versioned(paths.paused_file(ctx.env), supported=1) or {}
    except StateError:
        doc = {}
    kept = doc.get("paused")
    entry = kept.get(url) if isinstance(kept, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("record"), dict):
        return url, entry["record"]
    raise missing


def _forget_names(ctx: Context, owner: str) -> None:
    """Drop the relay's name, and the default when it was this relay (core/hosts.py)."""
    from ...core import hosts
    from ...core.errors import HermesError

    try:
        hosts.forget(hosts.control_file(ctx.env), [owner])
    except HermesError as exc:
        ctx.err(f"hermes-relay: the relay's name was not removed: {exc.message}")


def result_lines(result: dict[str, Any], ctx: Context) -> list[str]:
    from ..render import printable

    style = ctx.style
    prefix = result.get("prefix") or "?"
    given = result.get("relay")
    relay = given if isinstance(given, dict) else {}
    status, message = relay.get("status"), printable(str(relay.get("message") or ""))
    lines = [style.ok("✓") + f" forgot {result.get('url')}"]
    if status == "revoked":
        lines.append(_field("relay", f"session {prefix} revoked"))
    elif status == "already_ended":
        lines.append(_field("relay", "the session had already ended" + (f" ({message})" if message else "")))
    elif status == "unreachable":
        lines.append(_field("relay", style.warn("session NOT revoked: the relay could not be reached")
                            + (f" ({message})" if message else "")))
        lines.append(" " * (2 + _LABEL_WIDTH) + "it stays valid there until it expires; end it from the relay "
                     f"host or another device: hermes-relay devices revoke {prefix}")
    else:
        lines.append(_field("relay", "not contacted"))
    removed = [printable(str(r)) for r in result.get("removed") or []]
    lines.append(_field("removed", ", ".join(removed) if removed else "nothing"))
    return lines


def _field(label: str, value: str) -> str:
    return f"  {label + ':':<{_LABEL_WIDTH}}{value}"
