"""``hermes-relay audit [-n N] [-f] [--host URL] [--tool NAME] [--since WHEN] [--calls] [--json]``.

The desktop tool calls made on this computer: reads ``~/.hermes/desktop-audit.jsonl``, its kept
segments (``desktop-audit.<stamp>.jsonl``) and another client's rotated ``.1`` directly; no agent
needed. ``-f`` keeps printing new records as the agent appends them, across a rotation, until
Ctrl-C. An audit log that exists but cannot be read is an error, never "no calls yet".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ...core.errors import UsageError
from ..context import Context, add_common_flags

DEFAULT_LINES = 20
AUTHORISED = {  # how a call was authorised (agent/desktop/channel.py), as the audit shows it
    "policy": "allowed by policy", "user": "approved by you", "always": "approved: always",
    "denied": "denied by policy", "rejected": "denied by you", "expired": "approval expired",
    "withdrawn": "withdrawn: access lowered", "not_served": "refused: restricted",
    "not_asked": "refused without asking", "audit_failed": "refused: audit not writable",
    "unknown_tool": "unknown tool", "refused_env": "refused: environment override"}
FOLLOW_INTERVAL = 0.5
_sleep = time.sleep


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="show the desktop tool calls relay hosts made on this computer",
                       description="Show the desktop audit log (~/.hermes/desktop-audit.jsonl): one line "
                                   "per tool call and per relay connection event.",
                       epilog="examples:\n"
                              "  hermes-relay audit                # the latest 20 records\n"
                              "  hermes-relay audit -n 200\n"
                              "  hermes-relay audit --follow       # new records as they come, until Ctrl-C",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--lines", type=int, default=DEFAULT_LINES, metavar="N",
                   help=f"how many of the latest records (default {DEFAULT_LINES})")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records until Ctrl-C")
    p.add_argument("--host", metavar="URL", help="only this relay host's records (its URL, or part of it)")
    p.add_argument("--tool", metavar="NAME", help="only this tool's records (e.g. desktop_terminal)")
    p.add_argument("--since", metavar="WHEN", help="only records since WHEN: 30m, 12h, 7d, or a date "
                                                   "(2026-12-07, 2026-12-07T14:30)")
    p.add_argument("--calls", action="store_true", help="only tool calls (no connection events)")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ...core.desktop import audit_file, read_audit

    if args.lines < 0:
        raise UsageError(f"-n must be 0 or more (got {args.lines})")
    since = parse_since(args.since, time.time()) if args.since is not None else None
    wanted = _filter(args, since)
    path = audit_file(ctx.env)
    everything = read_audit(path, since=since)
    records = [r for r in everything if wanted(r)]
    shown = records[-args.lines:] if args.lines else []
    as_json = getattr(args, "json", False)
    if not records and not args.follow and not as_json:
        if everything:
            ctx.out(f"(no desktop audit records match in {path})")
        else:
            ctx.out(f"(no desktop calls recorded yet in {path})")
    for record in shown:
        _print(ctx, record, as_json)
    if args.follow:
        ctx.flush()
        _follow(ctx, path, as_json, wanted)
    return 0


def parse_since(text: str, now: float) -> float:
    """Epoch seconds for ``--since``: ``30s``/``30m``/``12h``/``7d`` ago, or a local ISO date or date-time."""
    import datetime

    value = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:].lower() in units and value[:-1].isdigit():
        return now - int(value[:-1]) * units[value[-1].lower()]
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise UsageError(f"--since {text!r} is not a duration or a date",
                         hint="use e.g. 30m, 12h, 7d, 2026-12-07 or 2026-12-07T14:30") from None


def _filter(args: argparse.Namespace, since: float | None) -> Any:
    host = (args.host or "").strip().lower()
    tool = (args.tool or "").strip()

    def wanted(record: dict[str, Any]) -> bool:
        if args.calls and not str(record.get("kind") or "").startswith("tool."):
            return False
        if host and host not in str(record.get("host_url") or "").lower():
            return False
        if tool and record.get("tool") != tool:
            return False
        ts = record.get("ts")
        return since is None or (isinstance(ts, (int, float)) and ts / 1000 >= since)

    return wanted


def _print(ctx: Context, record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        ctx.out(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    else:
        ctx.out(record_line(record, ctx.style))


def _follow(ctx: Context, path: Path, as_json: bool, wanted: Any) -> None:
    from ...core.desktop import audit_records

    def identity() -> tuple[int, int] | None:
        try:
            st = path.stat()
            return st.st_ino, st.st_size
        except OSError:
            return None

    current = identity()
    offset = current[1] if current else 0
    partial = b""
    while True:
        _sleep(FOLLOW_INTERVAL)
        now = identity()
        if now is None:
            continue
        if current is None or now[0] != current[0] or now[1] < offset:
            offset, partial = 0, b""  # rotated or replaced: read the new file from its start
        current = now
        if now[1] <= offset:
            continue
        with path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
        offset += len(chunk)
        data = partial + chunk
        complete, _, partial = data.rpartition(b"\n")
        for record in audit_records(complete):
            if wanted(record):
                _print(ctx, record, as_json)
        ctx.flush()


def record_line(record: dict[str, Any], style: Any) -> str:
    """``2026-11-30 12:00:01  ✓ desktop_terminal  120 ms  ws://relay:8767  uname -a``"""
    from .. import render

    ts = record.get("ts")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts / 1000)) if isinstance(ts, (int, float)) else "?"
    tool = render.printable(str(record.get("tool") or "?"))
    host = render.printable(str(record.get("host_url") or ""))
    how = AUTHORISED.get(str(record.get("authorised")), render.printable(str(record.get("authorised") or "")))
    kind = record.get("kind")
    if kind == "tool.started":
        return f"{when}  ▶ {tool}  {host}  {render.printable(str(record.get('args_preview') or ''))}  [{how}]"
    if kind == "tool.repeated":
        first = record.get("first_ts")
        since = time.strftime("%H:%M:%S", time.localtime(first / 1000)) if isinstance(first, (int, float)) else "?"
        outcome = render.printable(str(record.get("outcome") or ""))
        return style.dim(f"{when}  × {tool}  {host}  {record.get('count')} more ({outcome}) since {since}")
    if kind != "tool.completed":
        return style.dim(f"{when}  · {tool}  {host}".rstrip())
    if record.get("ok"):
        mark = style.ok("✓")
    elif record.get("aborted"):
        mark = style.warn("⏱")
    else:
        mark = style.bad("✗")
    ms = record.get("duration_ms")
    parts = [f"{when}  {mark} {tool}", f"{ms} ms" if isinstance(ms, int) else "", host,
             render.printable(str(record.get("args_preview") or ""))]
    line = "  ".join(p for p in parts if p)
    if how:
        line += f"  [{how}]"
    if isinstance(record.get("exit_code"), int) and record["exit_code"] != 0:
        line += f"  (exit {record['exit_code']})"
    if not record.get("ok") and record.get("error"):
        line += "  " + style.bad("error: " + render.printable(str(record["error"]))[:200])
    return line
