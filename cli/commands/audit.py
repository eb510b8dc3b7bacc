"""``hermes-relay audit [-n N] [-f] [--json]``: the desktop tool calls made on this computer.

Reads ``~/.hermes/desktop-audit.jsonl`` (and its rotated ``.1``) directly; no agent needed. ``-f``
keeps printing new records as the agent appends them, across a rotation, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from hermes_relay.cli.context import Context, add_common_flags
from hermes_relay.core.errors import UsageError

DEFAULT_LINES = 20
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
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from hermes_relay.core.desktop import audit_file, read_audit

    if args.lines < 0:
        raise UsageError(f"-n must be 0 or more (got {args.lines})")
    path = audit_file(ctx.env)
    records = read_audit(path)
    shown = records[-args.lines:] if args.lines else []
    as_json = getattr(args, "json", False)
    if not records and not args.follow and not as_json:
        ctx.out(f"(no desktop calls recorded yet in {path})")
    for record in shown:
        _print(ctx, record, as_json)
    if args.follow:
        ctx.flush()
        _follow(ctx, path, as_json)
    return 0


def _print(ctx: Context, record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        ctx.out(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    else:
        ctx.out(record_line(record, ctx.style))


def _follow(ctx: Context, path: Path, as_json: bool) -> None:
    from hermes_relay.core.desktop import audit_records

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
            _print(ctx, record, as_json)
        ctx.flush()


def record_line(record: dict[str, Any], style: Any) -> str:
    """``2026-11-30 12:00:01  ✓ desktop_terminal  120 ms  ws://relay:8767  uname -a``"""
    from hermes_relay.cli import render

    ts = record.get("ts")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts / 1000)) if isinstance(ts, (int, float)) else "?"
    tool = render.printable(str(record.get("tool") or "?"))
    host = render.printable(str(record.get("host_url") or ""))
    if record.get("kind") != "tool.completed":
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
    if isinstance(record.get("exit_code"), int) and record["exit_code"] != 0:
        line += f"  (exit {record['exit_code']})"
    if not record.get("ok") and record.get("error"):
        line += "  " + style.bad("error: " + render.printable(str(record["error"]))[:200])
    return line
