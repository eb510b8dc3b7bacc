"""``hermes-relay route``: the current route indicator, read from the agent's plain-text route file.

It never contacts the agent, so it is cheap enough for status bars, and exits 0, except with
``--no-autostart`` ("I need a running agent"): then 3 when no agent runs (no file, a clean stop, or
a dead pid), after printing the line as usual. The agent
rewrites the file (agent/indicator.py) on every change and before ``valid_until``:

    <valid_until epoch> <label words>
    <agent pid> <state> <since epoch or -> <url or ->

A file past ``valid_until``, or whose agent pid is gone (killed with ``kill -9``), is stale; no file
means the agent is not running. Reading it needs no json: only ``--json`` output imports it.
"""

from __future__ import annotations

import os

from ..context import Context, add_common_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def register(sub: Any) -> None:
    import argparse

    p = sub.add_parser("route", help="how the relay is reached right now (LAN, Tailscale, Public, offline)",
                       description="Print the route indicator the agent publishes (`down` after `hermes-relay down`). "
                                   "Does not contact the agent; exits 0, or with --no-autostart 3 when no agent "
                                   "is running.",
                       epilog="examples:\n  hermes-relay route        # LAN (ws://192.168.1.5:8767, since 3m ago)\n"
                              "  hermes-relay route        # LAN | office: Tailscale !1 (...): two relays, one "
                              "call waiting for approval",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p)
    p.set_defaults(run=run)


def parse_route_file(text: str) -> dict[str, Any]:
    """The indicator fields in a route file's text (missing second line: label and validity only)."""
    lines = text.splitlines()
    first = lines[0].split(None, 1) if lines else []
    out: dict[str, Any] = {"label": first[1].strip() if len(first) > 1 else "",
                           "valid_until": int(first[0]) if first and first[0].isascii() and first[0].isdigit() else None}
    second = lines[1].split(None, 3) if len(lines) > 1 else []
    if second and second[0].isascii() and second[0].isdigit() and int(second[0]) > 0:
        out["pid"] = int(second[0])
    if len(second) > 1:
        out["state"] = second[1]
    if len(second) > 2 and second[2] != "-":
        try:
            out["since"] = float(second[2])
        except ValueError:
            pass
    if len(second) > 3 and second[3] != "-":
        out["url"] = second[3].strip()
    return out


def load_indicator(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """(indicator, problem): (None, None) when the file is missing; a problem text when unreadable."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    try:
        indicator = parse_route_file(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"{path} is not UTF-8 text: {exc}"
    if not indicator["label"] or indicator["valid_until"] is None:
        return None, f"{path} is not a route indicator (expected `<valid-until> <label>`)"
    return indicator, None


def agent_alive(pid: int | None) -> bool | None:
    """Whether the process ``pid`` still runs as this user; None when there is no pid to check."""
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid now belongs to another user: not our agent
        return False
    except OSError:
        return None
    return True


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import paths
    from .. import render

    path = paths.route_file_str(ctx.env)
    indicator, problem = load_indicator(path)
    now = ctx.now()
    # A clean stop's "offline (agent stopped)" stays true after the agent has gone.
    alive = agent_alive(indicator.get("pid")) if indicator is not None and indicator.get("state") != "stopped" else None
    if problem is not None:
        text = f"unknown ({problem})"
    elif indicator is not None and alive is False:
        text = f"{render.printable(indicator['label'])} (stale: agent not running)"
    else:
        text = render.route_text(indicator, now)
    if getattr(args, "json", False):
        view: dict[str, Any] = dict(indicator or {})
        valid_until = view.get("valid_until")
        view.setdefault("label", render.OFFLINE_LABEL if problem is None else "unknown")
        view["running"] = indicator is not None and alive is not False
        view["stale"] = indicator is not None and (alive is False or valid_until is None or now > valid_until)
        view["text"] = text
        view["file"] = path
        if problem is not None:
            view["error"] = problem
        ctx.print_json(view)
    else:
        ctx.out(text)
    stopped = indicator is None or indicator.get("state") == "stopped" or alive is False
    return 3 if stopped and not ctx.autostart else 0  # 3: EXIT_AGENT_NOT_RUNNING (not imported: the hot path)
