"""``hermes-relay doctor [--fix] [--json]``: find out why the relay is not reachable, and what to do.

Two halves. The local checks run here, synchronously, and work with the agent down: versions, the
clock, the session store (exists, parses, private), the runtime directory and socket, the log
directory, and whether the agent answers. The network checks run in the agent (IPC ``doctor``,
agent/doctor.py): every route of every relay, step by step (DNS, TCP, TLS and pin, WebSocket, auth).

Doctor only looks, unless ``--fix`` is given; then it repairs what is safe to repair without asking
(file modes, and a store that cannot be parsed, which is moved aside with its bytes intact, never
deleted). It never starts the agent: an agent that is not running is itself a finding, and the route
checks then run once in a process of their own (``python -I -m hermes_relay.agent doctor``), so a
stopped relay still makes doctor fail.

Every check is ``{id, status, summary, detail, fix, fixable, fixed}`` with status ok, warn, fail or
skip; the exit status is 1 when anything failed, else 0.
"""

from __future__ import annotations

import argparse
from typing import Any

from ...core.errors import AgentNotRunningError, HermesError
from ..context import Context, add_common_flags

DEADLINE = 10.0  # seconds the agent may spend on the network checks (agent/doctor.py)
CALL_SLACK = 5.0  # on top of DEADLINE for the IPC round trip before the agent counts as stuck
MIN_PLAUSIBLE_YEAR = 2024  # an earlier clock is certainly wrong: TLS and session expiry would misfire
FILE_MODE = 0o600
DIR_MODE = 0o700
OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
_SECTIONS = {"system": "System", "store": "Session store", "runtime": "Files", "logs": "Files", "agent": "Agent",
             "desktop": "Desktop", "relays": "Relays"}
NO_NOTIFIER = ("a desktop call waiting for your approval then shows only in `hermes-relay approvals --watch` "
               "and in the prompt indicator ([LAN !1], see `hermes-relay prompt init`)")
START_AGENT = "start it with `hermes-relay agent start`, then run doctor again"


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check the installation, the agent and every route to each relay",
                       description="Check versions, the clock, the session store and file permissions, the "
                                   "agent, and every route of every paired relay (DNS, TCP, TLS and pin, "
                                   "WebSocket, auth). Never starts the agent: without one, the route checks run "
                                   "once in a process of their own. Exit status 1 when a check fails.",
                       epilog="examples:\n"
                              "  hermes-relay doctor          # every check, and how to fix what fails\n"
                              "  hermes-relay doctor --fix    # also repair modes, move a broken store aside\n"
                              "  hermes-relay doctor --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fix", action="store_true",
                   help="repair what is safe to repair: file modes, and a store that cannot be parsed "
                        "(moved aside as <name>.corrupt-<time>, never deleted)")
    add_common_flags(p)
    p.set_defaults(run=run)


def check(id: str, status: str, summary: str, *, detail: str | None = None, fix: str | None = None,
          fixable: bool = False, fixed: bool = False) -> dict[str, Any]:
    return {"id": id, "status": status, "summary": summary, "detail": detail, "fix": fix,
            "fixable": fixable, "fixed": fixed}


def run(args: argparse.Namespace, ctx: Context) -> int:
    repair = bool(args.fix)
    checks = [_versions(), _clock(ctx.now())]
    store_checks, store_replaced = _store(ctx, repair)
    checks += store_checks
    checks += _runtime(ctx, repair)
    checks.append(_logs(ctx))
    agent_checks, relays = _agent(ctx, reload_store=store_replaced)
    checks += agent_checks
    ok = all(c["status"] != FAIL for c in checks) and all(r.get("status") != FAIL for r in relays)
    if getattr(args, "json", False):
        ctx.print_json({"checks": checks, "relays": relays, "ok": ok})
    else:
        for line in text_view(checks, relays, style=ctx.style, now=ctx.now(), repair=repair):
            ctx.out(line)
    return 0 if ok else 1


# -- local checks ----------------------------------------------------------------------------------
def _versions() -> dict[str, Any]:
    import sys

    from ... import __version__

    py = ".".join(str(n) for n in sys.version_info[:3])
    return check("system.version", OK, f"hermes-relay {__version__}, Python {py}", detail=sys.executable)


def _clock(now: float) -> dict[str, Any]:
    import time

    utc, local = time.gmtime(now), time.localtime(now)
    text = time.strftime("%Y-%m-%d %H:%M:%S UTC", utc)
    zone = f"timezone {time.strftime('%Z', local) or '?'} (UTC{time.strftime('%z', local) or '?'})"
    if utc.tm_year < MIN_PLAUSIBLE_YEAR:
        return check("system.clock", WARN, f"the clock says {text}, which cannot be right", detail=zone,
                     fix="set the system clock (enable NTP): certificates and session expiry depend on it")
    return check("system.clock", OK, f"clock: {text}, {zone}")


def _shown(ctx: Context, path: Any) -> str:
    from ...core import paths
    from .. import render

    return render.tilde(str(path), str(paths.home_dir(ctx.env)))


def _store(ctx: Context, repair: bool) -> tuple[list[dict[str, Any]], bool]:
    """The store file's checks, and whether ``--fix`` replaced it (the agent must then reload)."""
    from ...core import paths
    from ...core.errors import StateCorruptError, StateError
    from ...core.store import SessionStore

    path = paths.sessions_file(ctx.env)
    shown = _shown(ctx, path)
    replaced = False
    try:
        sessions = SessionStore(path).read()["sessions"]
    except StateCorruptError as exc:
        if not repair:
            first = check("store.file", FAIL, f"{shown} cannot be parsed", detail=exc.message, fixable=True,
                          fix="run `hermes-relay doctor --fix`: it moves the file aside (your data is kept "
                              "in <name>.corrupt-<time>) and starts an empty store")
        else:
            first = _quarantine(path, shown, exc)
            replaced = first["fixed"]
    except StateError as exc:  # a newer format version, or the lock is stuck: never touched here
        first = check("store.file", FAIL, f"{shown} cannot be used", detail=exc.message, fix=exc.hint)
    except OSError as exc:
        first = check("store.file", FAIL, f"cannot read {shown}: {exc.strerror or exc}",
                      fix=f"check the owner and permissions of {path} (ls -l)")
    else:
        if sessions:
            n = len(sessions)
            first = check("store.file", OK, f"{shown}: {n} paired relay{'s' if n != 1 else ''}")
        else:
            what = "no paired relays" if path.exists() else "not created yet"
            first = check("store.file", WARN, f"{shown}: {what}",
                          fix="pair with `hermes-relay pair --remote ws://HOST:8767` (it asks for the code)")
    modes = [_mode("store.mode", path, shown, FILE_MODE, FAIL, repair, "other users can read the session tokens"),
             _mode("store.dir", path.parent, _shown(ctx, path.parent), DIR_MODE, WARN, repair,
                   "other users can list the Hermes state directory")]
    return [first, *(m for m in modes if m is not None)], replaced


def _quarantine(path: Any, shown: str, exc: HermesError) -> dict[str, Any]:
    from ...core import fileio
    from ...core.errors import StateCorruptError
    from ...core.store import STORE_VERSION, SessionStore

    try:
        with fileio.FileLock(path):
            try:
                SessionStore(path).read()
            except StateCorruptError:  # still damaged under the lock: nobody repaired it meanwhile
                dest = fileio.quarantine(path)
                fileio.atomic_write(path, fileio.dump_json({"version": STORE_VERSION, "sessions": {}}))
            else:
                return check("store.file", OK, f"{shown} was repaired by another program meanwhile")
    except (OSError, HermesError) as err:
        text = getattr(err, "message", None) or getattr(err, "strerror", None) or str(err)
        return check("store.file", FAIL, f"{shown} cannot be parsed, and moving it aside failed: {text}",
                     detail=exc.message, fixable=True, fix=f"move {path} aside by hand and run doctor again")
    return check("store.file", WARN, f"{shown} could not be parsed: moved it aside and started an empty store",
                 detail=f"your pairings are kept, byte for byte, in {dest}", fixed=True,
                 fix=f"repair {dest} by hand and move it back, or pair again with `hermes-relay pair`")


def _mode(id: str, path: Any, shown: str, want: int, severity: str, repair: bool, risk: str) -> dict[str, Any] | None:
    """``path`` must grant nothing to group or others; with ``repair`` it is chmod-ed to ``want``.

    None when ``path`` does not exist (the caller has reported that already).
    """
    import os
    import sys

    if sys.platform == "win32":  # pragma: no cover - POSIX modes only
        return check(id, SKIP, f"{shown}: permissions are not checked on Windows")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return check(id, FAIL, f"cannot inspect {shown}: {exc.strerror or exc}")
    mode = st.st_mode & 0o777
    if not mode & 0o077:
        return check(id, OK, f"{shown} is private ({mode:04o})")
    ours = st.st_uid == os.getuid()
    command = f"chmod {want:o} {path}"
    if repair and ours:
        try:
            os.chmod(path, want)
        except OSError as exc:
            return check(id, severity, f"{shown} is mode {mode:04o}: {risk}", fixable=True,
                         detail=f"chmod failed: {exc.strerror or exc}", fix=command)
        return check(id, OK, f"{shown} was mode {mode:04o}, now {want:04o}", fixed=True)
    if not ours:
        return check(id, severity, f"{shown} is mode {mode:04o} and owned by uid {st.st_uid}: {risk}",
                     fix=f"make it yours (chown) and {command}")
    return check(id, severity, f"{shown} is mode {mode:04o}: {risk}", fixable=True,
                 fix=f"run `hermes-relay doctor --fix` (or {command})")


def _runtime(ctx: Context, repair: bool) -> list[dict[str, Any]]:
    import os
    import stat
    import sys

    from ...core import paths

    run_dir = paths.runtime_dir(ctx.env)
    if not run_dir.exists():
        return [check("runtime.dir", SKIP, f"{_shown(ctx, run_dir)}: not created yet (the agent creates it)")]
    out = [m for m in [_mode("runtime.dir", run_dir, _shown(ctx, run_dir), DIR_MODE, WARN, repair,
                             "other users can reach the agent's socket and route files")] if m is not None]
    sock = paths.socket_path(ctx.env)
    if sys.platform == "win32":  # pragma: no cover - a named pipe, not a file
        return out
    try:
        is_socket = stat.S_ISSOCK(os.stat(sock).st_mode)
    except OSError:
        out.append(check("runtime.socket", SKIP, f"{_shown(ctx, sock)}: no socket (the agent is not running)"))
        return out
    if not is_socket:
        out.append(check("runtime.socket", WARN, f"{_shown(ctx, sock)} exists but is not a socket",
                         fix=f"remove {sock} (the agent creates its socket there)"))
    else:
        found = _mode("runtime.socket", sock, _shown(ctx, sock), FILE_MODE, WARN, repair,
                      "other users may try to talk to the agent")
        out += [found] if found is not None else []
    return out


def _logs(ctx: Context) -> dict[str, Any]:
    import os

    from ...core import paths

    log_dir = paths.log_dir(ctx.env)
    shown = _shown(ctx, log_dir)
    if log_dir.exists():
        if not log_dir.is_dir():
            return check("logs.dir", FAIL, f"{shown} is not a directory", fix=f"move {log_dir} aside")
        if os.access(log_dir, os.W_OK | os.X_OK):
            return check("logs.dir", OK, f"{shown} is writable")
        return check("logs.dir", FAIL, f"{shown} is not writable: the agent cannot log",
                     fix=f"chmod u+rwx {log_dir} (and make sure you own it)")
    parent = log_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if os.access(parent, os.W_OK | os.X_OK):
        return check("logs.dir", OK, f"{shown}: not created yet (the agent creates it)")
    return check("logs.dir", FAIL, f"{shown} cannot be created: {_shown(ctx, parent)} is not writable",
                 fix=f"make {parent} writable, or set HERMES_RELAY_LOG_DIR")


# -- the agent -------------------------------------------------------------------------------------
def _agent(ctx: Context, *, reload_store: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from ... import __version__
    from ...core import rpc
    from .. import render

    try:
        client = ctx.client(autostart=False)
    except AgentNotRunningError:
        stopped = [check("agent.running", WARN, "the agent is not running", fix="hermes-relay agent start")]
        try:
            result = _standalone(ctx)
        except HermesError as exc:
            return stopped + [check("relays", FAIL, f"the relays could not be checked without the agent: {exc.message}",
                                    fix=exc.hint or START_AGENT)], []
        return _agent_result(stopped, result)
    except HermesError as exc:
        return [check("agent.running", FAIL, f"the agent is not answering: {exc.message}",
                      fix="restart it with `hermes-relay agent restart` (see `hermes-relay agent logs`)"),
                check("relays", SKIP, "relay routes not checked: the agent is not answering")], []
    out: list[dict[str, Any]] = []
    with client:
        hello = client.hello or {}
        up = render.uptime(hello.get("started_at"), ctx.now())
        out.append(check("agent.running", OK, f"running (pid {hello.get('pid', '?')}, up {up})"))
        theirs, api_version = hello.get("agent_version"), hello.get("api_version")
        if theirs != __version__ or api_version != rpc.API_VERSION:
            out.append(check("agent.version", WARN,
                             f"the agent is {theirs} (IPC API {api_version}), this CLI is {__version__} "
                             f"(IPC API {rpc.API_VERSION})", fix="hermes-relay agent restart"))
        else:
            out.append(check("agent.version", OK, f"agent and CLI are both {__version__}"))
        if reload_store:
            try:
                client.reload(timeout=CALL_SLACK)
            except HermesError as exc:
                out.append(check("agent.reload", WARN, f"the agent did not reload the new store: {exc.message}",
                                 fix="hermes-relay agent restart"))
        try:
            result = client.doctor(deadline=DEADLINE, timeout=DEADLINE + CALL_SLACK)
        except HermesError as exc:
            out.append(check("relays", FAIL, f"the agent could not check the relays: {exc.message}",
                             fix=exc.hint or "hermes-relay agent restart"))
            return out, []
    out.append(_netwatch(result.get("netwatch") or {}))
    return _agent_result(out, result)


def _agent_result(out: list[dict[str, Any]], result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    desktop = result.get("desktop")
    if isinstance(desktop, dict):  # older agents do not report it
        out.append(notifier_check(desktop.get("notify")))
    knobs = result.get("knobs")
    if isinstance(knobs, dict) and knobs:  # test switches (core/knobs.py) left set in the agent's environment
        out.append(_knobs(knobs))
    relays = [r for r in result.get("relays") or [] if isinstance(r, dict)]
    if not relays:
        out.append(check("relays", SKIP, "no paired relays to check"))
    return out, relays


def _standalone(ctx: Context) -> dict[str, Any]:
    """The agent's route checks run once in a process of their own (``python -I -m hermes_relay.agent
    doctor``: the CLI imports no trio), without starting the agent: no link is opened, only doctor's
    short-lived connections, so a relay taken off with ``down`` stays off."""
    import json
    import os
    import subprocess

    from ...core.errors import StateError
    from ..client import agent_command, daemon_env

    command = agent_command()[:-1] + ["doctor", "--deadline", str(DEADLINE)]
    try:
        done = subprocess.run(command, env=daemon_env(ctx.env), cwd=os.path.abspath(os.sep), capture_output=True,
                              timeout=DEADLINE + CALL_SLACK, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise StateError(f"the checks did not finish within {DEADLINE + CALL_SLACK:g}s") from None
    except OSError as exc:
        raise StateError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise StateError(why[0])
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise StateError("the checks printed no report") from None
    if not isinstance(result, dict):
        raise StateError("the checks printed no report")
    return result


def notifier_check(info: Any) -> dict[str, Any]:
    """How a waiting approval reaches the user: a desktop notification, or only the watch and the prompt."""
    if not isinstance(info, dict):
        return check("desktop.notify", SKIP, "desktop notifications: not reported by the agent")
    program = info.get("program")
    if isinstance(program, str) and program:
        return check("desktop.notify", OK, f"desktop notifications for approvals: {program}")
    if info.get("disabled"):
        return check("desktop.notify", WARN, f"desktop notifications are off ({info['disabled']})",
                     detail=NO_NOTIFIER, fix="unset HERMES_RELAY_NOTIFY and run `hermes-relay agent restart`")
    return check("desktop.notify", WARN, "no desktop notifier found (notify-send, osascript)", detail=NO_NOTIFIER,
                 fix="install notify-send (libnotify-bin / libnotify) where the agent runs, then "
                     "`hermes-relay agent restart`; or keep `hermes-relay approvals --watch` open")


def _knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    from ..render import printable

    shown = ", ".join(f"{k}={v}" for k, v in sorted(knobs.items()))
    return check("agent.knobs", WARN, f"test switches are set in the agent's environment: {printable(shown)}",
                 detail="they inject faults or shorten deadlines; a real installation sets none",
                 fix="unset them and run `hermes-relay agent restart`")


def _netwatch(info: dict[str, Any]) -> dict[str, Any]:
    backend = str(info.get("backend") or "off")
    if backend == "off":
        why = "disabled (HERMES_RELAY_NETWATCH=0)" if info.get("enabled") is False else "not running"
        return check("agent.netwatch", WARN, f"network change watcher: {why}",
                     detail="network changes are noticed only when a keepalive fails",
                     fix="unset HERMES_RELAY_NETWATCH and run `hermes-relay agent restart`")
    return check("agent.netwatch", OK, f"network change watcher: {backend}")


# -- text ------------------------------------------------------------------------------------------
def marker(status: str, style: Any) -> str:
    return {OK: style.ok("✓"), WARN: style.warn("!"), FAIL: style.bad("✗")}.get(status, style.dim("-"))


def text_view(checks: list[dict[str, Any]], relays: list[dict[str, Any]], *, style: Any, now: float,
              repair: bool) -> list[str]:
    """The human report: checks grouped by section, then one block per relay, then a verdict."""
    lines: list[str] = []
    sections: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        if c["id"] == "relays" and relays:
            continue
        sections.setdefault(_SECTIONS.get(c["id"].split(".")[0], "Other"), []).append(c)
    for title, items in sections.items():
        if lines:
            lines.append("")
        lines.append(style.bold(title))
        for c in items:
            lines.extend(_item(c["status"], c["summary"], c.get("detail"), c.get("fix"), style, "  "))
    for relay in relays:
        lines.append("")
        lines.extend(relay_lines(relay, style=style, now=now))
    problems = [c for c in checks if c["status"] in (WARN, FAIL)] + [r for r in relays if r.get("status") in (WARN, FAIL)]
    fails = sum(1 for p in problems if p["status"] == FAIL)
    lines.append("")
    if not problems:
        lines.append(style.ok("No problems found."))
    else:
        warns = len(problems) - fails
        parts = ([f"{fails} failing"] if fails else []) + ([f"{warns} warning{'s' if warns != 1 else ''}"] if warns else [])
        lines.append((style.bad if fails else style.warn)(f"Problems: {', '.join(parts)}."))
    fixable = [c for c in checks if c.get("fixable") and not c.get("fixed") and c["status"] in (WARN, FAIL)]
    if fixable and not repair:
        lines.append(f"`hermes-relay doctor --fix` can repair {len(fixable)} of them.")
    return lines


def _item(status: str, summary: str, detail: Any, fix: Any, style: Any, indent: str) -> list[str]:
    out = [f"{indent}{marker(status, style)} {summary}"]
    if detail and status != OK:
        out.append(f"{indent}  {style.dim(str(detail))}")
    if fix and status in (WARN, FAIL):
        out.append(f"{indent}  fix: {fix}")
    return out


def relay_lines(relay: dict[str, Any], *, style: Any, now: float) -> list[str]:
    """One relay: its link's current state, then each route's steps up to the first failure."""
    lines = [style.bold(f"Relay {relay.get('url')}")]
    link = relay.get("link")
    status, summary, detail, fix = _link_text(link, now)
    if link is None and relay.get("link_status") == SKIP:
        summary = "link: none (the agent is not running; these checks ran without it)"
    lines.extend(_item(relay.get("link_status") or status, summary, detail, fix, style, "  "))
    for route in relay.get("routes") or []:
        where = f" ({route['address']})" if route.get("address") and route["address"] not in str(route.get("url")) else ""
        lines.append(f"  {marker(route.get('status', SKIP), style)} {route.get('label')} {route.get('url')}{where}")
        for step in route.get("steps") or []:
            ms = step.get("ms")
            timing = f"{ms:.0f} ms" if isinstance(ms, (int, float)) and step["status"] != SKIP else ""
            lines.extend(_item(step["status"], f"{step['step']:<4} {timing:>7}  {step['summary']}", step.get("detail"),
                               step.get("fix"), style, "    "))
            if step["status"] == FAIL:
                break
    return lines


def _link_text(link: Any, now: float) -> tuple[str, str, str | None, str | None]:
    from .. import render

    if not isinstance(link, dict):
        return WARN, "link: the agent runs no link for this relay", None, "hermes-relay agent restart"
    if link.get("state") == "down":
        return OK, f"link: down (taken off with `hermes-relay down`; back on: hermes-relay up {link.get('url')})", None, None
    state = str(link.get("state") or "unknown")
    last_error, given_route = link.get("last_error"), link.get("route")
    error = last_error if isinstance(last_error, dict) else {}
    message = error.get("message") or None
    data = error["data"] if isinstance(error.get("data"), dict) else {}
    route = given_route if isinstance(given_route, dict) else {}
    if state == "connected":
        latency = f", {link['latency_ms']:.0f} ms" if isinstance(link.get("latency_ms"), (int, float)) else ""
        since = render.ago(link.get("since"), now)
        return OK, f"link: connected via {route.get('label')} ({route.get('url')}) since {since}{latency}", None, None
    if state == "backoff":
        return WARN, (f"link: waiting to reconnect (attempt {link.get('attempts') or 0}, next try "
                      f"{render.countdown(link.get('next_retry_at'), now)})"), message, "see the route checks below"
    if state == "rate_limited":
        return WARN, f"link: rate limited by the relay (next try {render.countdown(link.get('next_retry_at'), now)})", \
            message, "wait; every failed attempt extends the block"
    if state in ("revoked", "expired"):
        what = "revoked" if state == "revoked" else "expired"
        return FAIL, f"link: stopped, the session was {what}", message, "pair again with `hermes-relay pair`"
    if state == "pin_mismatch":
        return FAIL, "link: stopped, the relay's certificate changed", message, data.get("hint")
    return WARN, f"link: {state.replace('_', ' ')}", message, None
