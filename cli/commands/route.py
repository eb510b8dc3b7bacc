"""``hermes-relay route``: the current route indicator, read from the agent's route.json.

It never contacts the agent, so it is cheap enough for status bars and always exits 0. The agent
rewrites the file (a RouteIndicator, core/api.py) on every change and before ``valid_until``; a
file past ``valid_until`` means the agent stopped updating it (crashed, suspended), and no file
means the agent is not running.
"""

from __future__ import annotations

import argparse
from typing import Any

from hermes_relay.cli.context import Context, add_common_flags


def register(sub: Any) -> None:
    p = sub.add_parser("route", help="how the relay is reached right now (LAN, Tailscale, Public, offline)",
                       description="Print the route indicator the agent publishes. Does not contact the agent.")
    add_common_flags(p)
    p.set_defaults(run=run)


def load_indicator(path: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(indicator, problem): (None, None) when the file is missing; a problem text when unreadable."""
    import json

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} is not valid JSON: {exc}"
    if not isinstance(obj, dict):
        return None, f"{path} does not hold a JSON object"
    return obj, None


def run(args: argparse.Namespace, ctx: Context) -> int:
    from hermes_relay.cli import render
    from hermes_relay.core import paths

    path = paths.route_json_file(ctx.env)
    indicator, problem = load_indicator(path)
    now = ctx.now()
    if problem is not None:
        text = f"unknown ({problem})"
    else:
        text = render.route_text(indicator, now)
    if getattr(args, "json", False):
        view: dict[str, Any] = dict(indicator or {})
        valid_until = render.to_epoch(view.get("valid_until"))
        view.setdefault("label", render.OFFLINE_LABEL if problem is None else "unknown")
        view["running"] = indicator is not None
        view["stale"] = indicator is not None and (valid_until is None or now > valid_until)
        view["text"] = text
        view["file"] = str(path)
        if problem is not None:
            view["error"] = problem
        ctx.print_json(view)
    else:
        ctx.out(text)
    return 0
