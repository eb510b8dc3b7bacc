"""Apply one ``hermes-relay access`` change: tell the agent, write the files, audit it, report it.

The running agent is told *before* the files change (``access.changing``), so when it sees the
change (within 2 s) its audit record names ``hermes-relay access`` rather than "changed outside".
When no agent runs, nobody would see the change happen: this module appends the ``policy.changed``
record itself, with the same before/after the agent would have written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import EXIT_FAILURE
from .context import Context

ANNOUNCE_TIMEOUT = 2.0  # seconds; the agent answers from memory


def snapshot(ctx: Context) -> tuple[Any, Any]:
    from ..core import policy, roots

    return policy.load(policy.policy_file(ctx.env)), roots.load(roots.roots_file(ctx.env))


def announce(ctx: Context, url: str, command: str = "access") -> bool:
    """True when a running agent will record the change (False: no agent is running)."""
    from ..core.errors import AgentNotRunningError, HermesError

    try:
        with ctx.client(autostart=False) as client:
            client.access_changing(url, command=command if command != "access" else None, timeout=ANNOUNCE_TIMEOUT)
    except AgentNotRunningError:
        return False
    except HermesError:  # an older agent: it still records the change, as seen in the file
        return True
    return True


def audit_locally(ctx: Context, before: tuple[Any, Any], after: tuple[Any, Any], by: str) -> None:
    from ..core import desktop, policy_log

    for host, old, new in policy_log.changes(before, after):
        try:
            policy_log.append(desktop.audit_file(ctx.env), policy_log.record(ctx.now(), host, old, new, by))
        except OSError as exc:
            ctx.err(f"hermes-relay: the change is applied but could not be recorded in the audit log: {exc}")
            return


def apply(ctx: Context, args: argparse.Namespace, url: str, mode: str | None, single: tuple[str, str] | None,
          added: list[tuple[Path, list[Path]]]) -> int:
    from ..core import confine, policy, roots
    from .consent import host_view

    before = snapshot(ctx)  # an unparseable file fails here, before anything is written
    recorded = announce(ctx, url)
    notes: list[str] = []
    failed = False
    ppath, rpath = policy.policy_file(ctx.env), roots.roots_file(ctx.env)
    if mode is not None:
        policy.set_mode(ppath, url, mode, now=ctx.now())
    if single is not None:
        policy.set_capability(ppath, url, single[0], single[1], now=ctx.now())
    if args.reset_roots:
        roots.reset(rpath, url)
        notes.append("roots reset to the default: your home directory, without the agent's own state")
    for raw in args.remove_root:
        if roots.remove(rpath, url, raw, now=ctx.now()):
            notes.append(f"root {raw} removed")
        else:
            notes.append(ctx.style.warn(f"{raw} is not one of its roots: nothing removed"))
            failed = True
    for root, inside in added:
        _, _, replaced = roots.add(rpath, url, str(root), protected=confine.protected_paths(ctx.env), now=ctx.now())
        notes.append(f"root {root} added" + (" (it replaces the default, your home directory)" if replaced else ""))
        for path in inside:
            notes.append(f"{path} inside it stays out of reach (the agent's own state)")
    after = snapshot(ctx)
    if not recorded:
        from ..core import policy_log

        audit_locally(ctx, before, after, policy_log.BY_ACCESS)
    view = host_view(after[0], after[1], url, False, ctx.env)
    if getattr(args, "json", False):
        ctx.print_json({**view, "notes": notes})
        return EXIT_FAILURE if failed else 0
    for line in changed_lines(view, notes, ctx):
        ctx.out(line)
    return EXIT_FAILURE if failed else 0


def changed_lines(view: dict[str, Any], notes: list[str], ctx: Context) -> list[str]:
    import sys

    from ..core import policy
    from . import consent

    caps = view["capabilities"]
    lines = [ctx.style.ok("✓") + f" {view['url']}: {view['label']}",
             "  " + consent.describe(view, consent.abi(), sys.platform),
             "  " + ", ".join(f"{c} {caps[c]}" for c in policy.CAPABILITIES),
             "  " + consent.roots_line(view)]
    lines += ["  " + note for note in notes]
    lines.append(ctx.style.dim("the agent applies it within 2 s"))
    return lines
