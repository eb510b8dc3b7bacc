"""``hermes-relay-server call``: run one desktop tool on a paired computer, from the relay host.

It is the relay's own ``POST /desktop/<tool>`` (the path the Hermes agent's tool shim takes) behind a
command line: plain blocking Python (urllib), no trio. Output is the tool's result made readable:
a command's stdout and stderr go to ours, text is printed as is, anything else as indented JSON;
``--json`` prints the relay's whole answer instead. A call not answered within a second says on stderr
which computer it waits for and for how long (it may be asking its user for approval); a tool that
computer does not offer is told apart: disabled there (a known tool, with its capability) or unknown (with a
did-you-mean). ``--list`` shows each connected computer and the tools it offers.

Exit codes: 0 the tool ran, 1 the tool or the call failed, 2 usage, 3 no desktop client connected.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from .. import __version__
from ..core.errors import EXIT_AGENT_NOT_RUNNING, EXIT_FAILURE, EXIT_OK, HermesError, UsageError
from ..core.routes import http_base, normalize_relay_url
from . import catalogue, listening
from .pair_cmd import find_relay, request_json

PROG = "hermes-relay-server call"
HEALTH_TOOL = "desktop_health"  # answered by the relay from its cache, even when the client is wedged
EXIT_NO_DESKTOP = EXIT_AGENT_NOT_RUNNING  # 3: nothing to call, as the CLI's "agent not running"
# Without --timeout, wait past the relay's longest class timeout (ADB, 300 s): the relay answers 504 itself.
DEFAULT_WAIT = 305.0
HTTP_GRACE = 5.0  # with --timeout, the HTTP wait exceeds the relay's own so that its 504 arrives first
ANNOUNCE_AFTER = 1.0  # seconds without an answer before saying what the call waits for
NO_COMPUTER_HINT = ("on the computer, run `hermes-relay agent start` and pair it with this relay "
                    "(`hermes-pair` here prints a code)")
HINTS = {
    503: NO_COMPUTER_HINT,
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
    p.add_argument("tool", nargs="?", help="the tool's name, e.g. desktop_terminal, desktop_read_file, desktop_job_list")
    p.add_argument("args", nargs="?", default="{}",
                   help="the tool's arguments as a JSON object (default {}); - reads them from stdin")
    p.add_argument("--device", help="which computer, when several are connected: its name, host or device id")
    p.add_argument("--relay", help="the local relay (" + listening.RELAY_HELP + ")")
    p.add_argument("--timeout", type=float,
                   help="seconds to wait for the answer (at most the relay's: 30 s, computer use 180 s, ADB 300 s)")
    p.add_argument("--json", action="store_true", help="print the relay's whole JSON answer")
    p.add_argument("--list", action="store_true", help="list the connected computers and the tools each offers")
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


def relay_base(relay_url: str) -> str:
    url, _ = normalize_relay_url(relay_url)
    url, _ = find_relay(url)
    return http_base(url)


def call(relay_url: str, tool: str, args: dict[str, Any], timeout: float | None,
         err: TextIO | None = None) -> tuple[int, dict[str, Any]]:
    """``POST /desktop/<tool>`` on the local relay: (HTTP status, JSON answer).

    ``desktop_health`` is answered by the relay itself (``GET /desktop/health``), as in the reference.
    With ``err``, the relay is first asked which computer would answer (``_ping``): a tool that computer
    does not offer is answered here (disabled there, or unknown), and otherwise ``err`` says what the
    call waits for, so a long approval wait is not silence.
    """
    base = relay_base(relay_url)
    wait = timeout + HTTP_GRACE if timeout is not None else DEFAULT_WAIT
    if tool == HEALTH_TOOL:
        return request_json("GET", f"{base}/desktop/health", timeout=wait)
    message = None
    if err is not None:
        refused, message = _preflight(base, tool, args, timeout)
        if refused is not None:
            return refused
    query = f"?timeout={timeout:g}" if timeout is not None else ""
    url = f"{base}/desktop/{urllib.parse.quote(tool, safe='')}{query}"
    return _announced(lambda: request_json("POST", url, args, timeout=wait), message, err)


def _preflight(base: str, tool: str, args: dict[str, Any],
               timeout: float | None) -> tuple[tuple[int, dict[str, Any]] | None, str | None]:
    """Ask the relay which computer would answer: (an answer when the tool is not offered, what to say
    while waiting for that computer)."""
    device = args.get("device") or args.get("device_id")
    query = {"tool": tool, **({"device": device} if isinstance(device, str) else {})}
    status, ping = request_json("GET", f"{base}/desktop/_ping?{urllib.parse.urlencode(query)}")
    if status == 503 and ping.get("connected") and "advertise" in str(ping.get("error", "")):
        return (404, {"ok": False, "error": _not_offered(tool, device, ping), "unoffered": True}), None
    if status != 200 or len(ping.get("targets") or ()) > 1 and not device:
        return None, None  # the call itself answers: no computer, an unknown selector, or "pass a device"
    target = ping.get("target") or {}
    where = target.get("device_name") or target.get("device_id") or "the desktop computer"
    limit = catalogue.response_timeout(tool) if timeout is None else min(timeout, catalogue.response_timeout(tool))
    left = max(0.0, limit - ANNOUNCE_AFTER)
    return None, f"waiting for {where} to answer (it may be asking its user for approval); gives up in {left:.0f}s"


def _announced(post: Callable[[], tuple[int, dict[str, Any]]], message: str | None,
               err: TextIO | None) -> tuple[int, dict[str, Any]]:
    """Run ``post``; when it has not answered within ANNOUNCE_AFTER, print ``message`` (a quick call stays
    quiet: its stderr is the tool's own)."""
    if message is None or err is None:
        return post()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["reply"] = post()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=run, name="desktop-call", daemon=True)
    worker.start()
    worker.join(ANNOUNCE_AFTER)
    if worker.is_alive():
        print(message, file=err, flush=True)
        worker.join()
    if "error" in box:
        raise box["error"]
    return box["reply"]  # type: ignore[no-any-return]


def _not_offered(tool: str, device: Any, ping: dict[str, Any]) -> str:
    where = device if isinstance(device, str) else "that computer"
    cap = catalogue.capability(tool)
    if catalogue.is_known(tool):
        what = f"capability {cap}" if cap else "not offered"
        return f"{tool} is disabled on {where} ({what})"
    guesses = catalogue.suggestions(tool, [t for t in ping.get("advertised_tools") or () if isinstance(t, str)])
    return f"unknown tool {tool!r}" + (f"; did you mean {' or '.join(guesses)}?" if guesses else "")


def list_computers(relay_url: str, out: TextIO) -> int:
    """``--list``: each connected computer and the tools it offers (from ``GET /desktop/health``)."""
    status, health = request_json("GET", f"{relay_base(relay_url)}/desktop/health")
    clients = [c for c in health.get("clients") or () if isinstance(c, dict) and c.get("serving", True)]
    if status != 200 or not clients:
        print("no computer is connected to this relay", file=out)
        print(f"  {NO_COMPUTER_HINT}", file=out)
        return EXIT_NO_DESKTOP
    for client in clients:
        tools = sorted(t for t in client.get("advertised_tools") or () if isinstance(t, str))
        name, device_id = client.get("device_name") or "desktop", client.get("device_id") or "legacy"
        print(f"{name} ({device_id}): {len(tools)} tool{'s' if len(tools) != 1 else ''}"
              + ("" if tools else " advertised (an older client: it takes any tool)"), file=out)
        by_cap: dict[str, list[str]] = {}
        for t in tools:
            by_cap.setdefault(catalogue.capability(t) or "other", []).append(t)
        for cap, names in sorted(by_cap.items()):
            print(f"  {cap + ':':<14}{' '.join(names)}", file=out)
    return EXIT_OK


def render(tool: str, status: int, body: dict[str, Any], out: TextIO, err: TextIO) -> int:
    """Print the answer readably; returns the exit code."""
    if status != 200:
        print(f"{PROG}: {body.get('error') or f'HTTP {status}'}", file=err)
        if body.get("unoffered"):
            print(f"  `{PROG} --list` shows the tools each connected computer offers", file=err)
        elif status in HINTS:
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
        if args.list:
            return list_computers(args.relay or listening.local_relay(), out)
        if not args.tool:
            raise UsageError("name the tool to call", hint=f"`{PROG} --list` shows the tools each computer offers")
        if args.timeout is not None and not 0 < args.timeout <= 3600:
            raise UsageError("--timeout must be between 0 and 3600 seconds")
        tool_args = parse_args_object((stdin or sys.stdin).read() if args.args == "-" else args.args)
        if args.device:
            tool_args["device"] = args.device
        status, body = call(args.relay or listening.local_relay(), args.tool, tool_args, args.timeout, err)
    except HermesError as exc:
        return exc.report(PROG, err)
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False), file=out)
        if status == 200 and body.get("ok") is True:
            return EXIT_OK
        return EXIT_NO_DESKTOP if status == 503 else EXIT_FAILURE
    return render(args.tool, status, body, out, err)
