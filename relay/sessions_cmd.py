"""``hermes-relay-server sessions``: the operator's view of paired devices, run on the relay host.

``list``, ``extend PREFIX --ttl 30d`` and ``revoke PREFIX`` call the relay's ``/sessions`` API over loopback
without a bearer token: the relay treats a direct loopback caller as the operator, who (unlike a paired
device) may extend any session. Plain blocking Python, no trio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from ..core import timefmt
from ..core.cliargs import DashPositionalsMixin
from ..core.errors import HermesError, TransportError, UsageError
from ..core.routes import http_base, normalize_relay_url
from . import listening
from .pair_cmd import find_relay, request_json


class _Parser(DashPositionalsMixin, argparse.ArgumentParser):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hermes-relay-server sessions",
        description="List, extend or revoke paired devices' sessions (run on the relay host).",
        epilog="Examples: hermes-relay-server sessions list; hermes-relay-server sessions extend kd21 --ttl 30d; "
               "hermes-relay-server sessions revoke kd21",
    )
    p.add_argument("--relay", help="the local relay (" + listening.RELAY_HELP + ")")
    p.add_argument("--json", action="store_true", help="print the relay's JSON answer")
    sub = p.add_subparsers(dest="action")
    lst = sub.add_parser("list", help="every session (the default)")
    ext = sub.add_parser("extend", help="give a session a new lifetime, counted from now")
    ext.dash_positionals = True  # type: ignore[attr-defined]  # a token prefix may start with "-"
    ext.add_argument("prefix", help="the session's token prefix (4-8 characters, from `list`)")
    ext.add_argument("--ttl", required=True, help="seconds, or 1d/7d/30d/90d/1y, or 0/never")
    rev = sub.add_parser("revoke", help="end a session and its refresh token")
    rev.dash_positionals = True  # type: ignore[attr-defined]
    rev.add_argument("prefix", help="the session's token prefix (4-8 characters, from `list`)")
    rev.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    for verb in (lst, ext, rev):  # the common flags may also follow the subcommand: `sessions list --json`
        verb.add_argument("--relay", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        verb.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        base = http_base(find_relay(normalize_relay_url(args.relay or listening.local_relay())[0])[0])
        action = args.action or "list"
        if action == "list":
            reply = _call("GET", f"{base}/sessions")
        elif action == "extend":
            reply = _call("PATCH", f"{base}/sessions/{args.prefix}", {"ttl_seconds": timefmt.parse_ttl(args.ttl)})
        else:
            if not _confirm_revoke(base, args.prefix, yes=args.yes, err=err):
                print("not revoked", file=err)
                return 1
            reply = _call("DELETE", f"{base}/sessions/{args.prefix}")
    except HermesError as exc:
        return exc.report("hermes-relay-server sessions", err)
    if args.json:
        print(json.dumps(reply, indent=2), file=out)
    elif action == "list":
        _print_list(reply.get("sessions", []), out)
    elif action == "extend":
        print(f"extended {reply['token_prefix']}: now expires {timefmt.expiry(reply['expires_at'], time.time())}", file=out)
    else:
        print(f"revoked {reply['revoked']}", file=out)
    return 0


def _confirm_revoke(base: str, prefix: str, *, yes: bool, err: TextIO) -> bool:
    """Ask on a terminal before ending a session (True: go ahead); without one, ``--yes`` is required."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"revoking {prefix} ends that device's session; nothing asked without a terminal",
                         hint=f"pass --yes: hermes-relay-server sessions revoke {prefix} --yes")
    sessions = _call("GET", f"{base}/sessions").get("sessions", [])
    hits = [s for s in sessions if isinstance(s, dict) and str(s.get("token_prefix") or "").startswith(prefix)]
    what = prefix if len(hits) != 1 else f"{hits[0].get('token_prefix')} ({hits[0].get('device_name') or 'unnamed device'})"
    err.write(f"Revoke {what}? It is disconnected and must pair again. [y/N] ")
    err.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    status, reply = request_json(method, url, body)
    if status >= 400:
        hint = "run this on the relay host itself" if status in (401, 403) else None
        raise TransportError(f"the relay refused {method} {url.split('/', 3)[-1]} (HTTP {status}): "
                             f"{reply.get('error', '')}", hint=hint)
    return reply


def _print_list(sessions: list[dict[str, Any]], out: TextIO) -> None:
    if not sessions:
        print("no paired devices", file=out)
        return
    now = time.time()
    print(f"{'PREFIX':<9} {'DEVICE':<24} {'EXPIRES':<14} LAST SEEN", file=out)
    for s in sessions:
        name = str(s.get("device_name", "?")).replace("\n", " ")[:24]
        print(f"{s.get('token_prefix', '?'):<9} {name:<24} {timefmt.expiry(s.get('expires_at'), now):<14} "
              f"{timefmt.age(s.get('last_seen'), now)}", file=out)
