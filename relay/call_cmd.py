"""``hermes-relay-server call``: run one desktop tool on a paired computer, from the relay host.

It is the relay's own ``POST /desktop/<tool>`` (the path the Hermes agent's tool shim takes) behind a
command line: plain blocking Python (urllib), no trio. Output is the tool's result made readable:
a command's stdout and stderr go to ours, text is printed as is, anything else as indented JSON;
``--json`` prints the relay's whole answer instead.

Exit codes: 0 the tool ran, 1 the tool or the call failed, 2 usage, 3 no desktop client connected.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

from hermes_relay import __version__
from hermes_relay.core.errors import EXIT_AGENT_NOT_RUNNING, EXIT_FAILURE, EXIT_OK, HermesError, UsageError
from hermes_relay.core.routes import http_base, normalize_relay_url
from hermes_relay.relay import listening
from hermes_relay.relay.pair_cmd import find_relay, request_json

PROG = "hermes-relay-server call"
HEALTH_TOOL = "desktop_health"  # answered by the relay from its cache, even when the client is wedged
EXIT_NO_DESKTOP = EXIT_AGENT_NOT_RUNNING  # 3: nothing to call, as the CLI's "agent not running"
# Without --timeout, wait past the relay's longest class timeout (ADB, 300 s): the relay answers 504 itself.
DEFAULT_WAIT = 305.0
HTTP_GRACE = 5.0  # with --timeout, the HTTP wait exceeds the relay's own so that its 504 arrives first
HINTS = {
    503: "start hermes-relay-agent on the desktop computer and pair it with this relay (hermes-pair)",
    409: "pass --device with one of the names or ids listed",
    504: "start long work with desktop_job_start and read it with desktop_job_logs",
    403: "run this on the relay host itself (desktop calls are loopback-only)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Call a desktop tool on a computer paired with this relay, e.g. "
                    "desktop_terminal '{\"command\": \"uname -a\"}'.",
        epilog="Exit codes: 0 the tool ran, 1 the tool or the call failed, 2 usage, 3 no desktop client connected.",
    )
    p.add_argument("tool", help="the tool's name, e.g. desktop_terminal, desktop_read_file, desktop_job_list")
    p.add_argument("args", nargs="?", default="{}",
                   help="the tool's arguments as a JSON object (default {}); - reads them from stdin")
    p.add_argument("--device", help="which computer, when several are connected: its name, host or device id")
    p.add_argument("--relay", help="the local relay (" + listening.RELAY_HELP + ")")
    p.add_argument("--timeout", type=float,
                   help="seconds to wait for the answer (at most the relay's: 30 s, computer use 180 s, ADB 300 s)")
    p.add_argument("--json", action="store_true", help="print the relay's whole JSON answer")
    p.add_argument("--version", action="version", version=f"hermes-relay-server {__version__}")
    return p


def parse_args_object(text: str) -> dict[str, Any]:
    """The tool arguments from the command line; HermesError (usage) with what to type otherwise."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"the tool arguments are not valid JSON ({exc.msg} at character {exc.pos})",
                           hint="""quote them for the shell, e.g. '{"command": "uname -a"}'""") from None
    if not isinstance(obj, dict):
        raise UsageError("the tool arguments must be a JSON object", hint="""e.g. '{"path": "notes.txt"}'""")
    return obj


def call(relay_url: str, tool: str, args: dict[str, Any], timeout: float | None) -> tuple[int, dict[str, Any]]:
    """``POST /desktop/<tool>`` on the local relay: (HTTP status, JSON answer).

    ``desktop_health`` is answered by the relay itself (``GET /desktop/health``), as in the reference.
    """
    url, _ = normalize_relay_url(relay_url)
    url, _ = find_relay(url)
    base = http_base(url)
    wait = timeout + HTTP_GRACE if timeout is not None else DEFAULT_WAIT
    if tool == HEALTH_TOOL:
        return request_json("GET", f"{base}/desktop/health", timeout=wait)
    query = f"?timeout={timeout:g}" if timeout is not None else ""
    return request_json("POST", f"{base}/desktop/{urllib.parse.quote(tool, safe='')}{query}", args, timeout=wait)


def render(tool: str, status: int, body: dict[str, Any], out: TextIO, err: TextIO) -> int:
    """Print the answer readably; returns the exit code."""
    if status != 200:
        print(f"{PROG}: {body.get('error') or f'HTTP {status}'}", file=err)
        if status in HINTS:
            print(f"  {HINTS[status]}", file=err)
        return EXIT_NO_DESKTOP if status == 503 else EXIT_FAILURE
    if tool == HEALTH_TOOL:
        print(json.dumps(body, indent=2, ensure_ascii=False), file=out)
        return EXIT_OK
    target = body.get("target") or {}
    where = target.get("device_name") or target.get("device_id") or "the desktop"
    if body.get("ok") is not True:
        print(f"{PROG}: {tool} failed on {where}: {body.get('error') or 'no error message'}", file=err)
        return EXIT_FAILURE
    result = body.get("result")
    if isinstance(result, str):
        out.write(result if result.endswith("\n") or not result else result + "\n")
    elif isinstance(result, dict) and {"stdout", "stderr", "exit_code"} <= result.keys():
        out.write(str(result["stdout"] or ""))
        err.write(str(result["stderr"] or ""))
        if result["exit_code"] not in (0, None):
            print(f"{PROG}: {tool} on {where}: exit code {result['exit_code']}", file=err)
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False), file=out)
    return EXIT_OK


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_intermixed_args(argv)  # `call TOOL --json ARGS` too
    try:
        if args.timeout is not None and not 0 < args.timeout <= 3600:
            raise UsageError("--timeout must be between 0 and 3600 seconds")
        tool_args = parse_args_object((stdin or sys.stdin).read() if args.args == "-" else args.args)
        if args.device:
            tool_args["device"] = args.device
        status, body = call(args.relay or listening.local_relay(), args.tool, tool_args, args.timeout)
    except HermesError as exc:
        return exc.report(PROG, err)
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False), file=out)
        if status == 200 and body.get("ok") is True:
            return EXIT_OK
        return EXIT_NO_DESKTOP if status == 503 else EXIT_FAILURE
    return render(args.tool, status, body, out, err)
