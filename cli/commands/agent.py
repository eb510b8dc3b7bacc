"""``hermes-relay agent start|stop|restart|status|logs|run|install|uninstall``: the agent's lifecycle.

``start`` uses the same autostart path as every other command (cli/client.py: spawn lock, detached
child, socket poll). ``stop`` asks the agent to exit over IPC, then waits until nothing listens on
the socket and the process is gone, polling with growing sleeps under a deadline: a ``restart``
must not start the new agent while the old one still holds the instance lock. ``run`` replaces this
process with the agent in the foreground, for service managers and debugging.

``install`` hands the agent to the per-user service manager (cli/service/: systemd, launchd, the
Windows Run key), stopping a CLI-started agent first so the service is its single owner.
Once a service is installed, enabled and reachable, ``start``, ``stop`` and ``restart`` go through
the manager (``systemctl --user start`` ...) rather than spawning or signalling the agent
themselves; without one they behave exactly as before, at the cost of one stat.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ...core.errors import AgentNotRunningError, IpcError, NotFoundError, UsageError
from ..context import Context, add_common_flags, add_verb

STOP_TIMEOUT = 10.0  # seconds for the agent to close its links and exit after agent.stop
SERVICE_START_WAIT = 10.0  # seconds for a service manager's agent to answer; the CLI's AUTOSTART_WAIT
DEFAULT_LOG_LINES = 50
FOLLOW_POLL = 0.25  # seconds between looks at a followed log file, as `tail -f` (GNU: 1 s)
_TAIL_BLOCK = 8192

_execve = os.execve  # replaced by tests; os.execve never returns


def register(sub: Any) -> None:
    p = sub.add_parser("agent", help="start, stop, restart, inspect or run the background agent",
                       description="Manage the per-user agent that keeps relay connections alive.",
                       epilog="examples:\n  hermes-relay agent status\n  hermes-relay agent logs -f\n"
                              "  hermes-relay agent install     # start at login, restart after a crash",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="agent_cmd", prog="hermes-relay agent",
                             metavar="{start,stop,restart,status,logs,run,install,uninstall}")
    start = add_verb(verbs, "start", "start the agent if it is not running",
                  "Start the agent in the background (through the per-user service when one is installed). "
                  "Does nothing when it is already running.",
                  "hermes-relay agent start         # agent: started (pid 4242, 0.1.0)")
    stop = add_verb(verbs, "stop", "stop the agent (not running is fine)",
                 "Ask the agent to close its relay links and exit. Pairings stay in the store.",
                 "hermes-relay agent stop")
    restart = add_verb(verbs, "restart", "stop the agent, wait until it is gone, start it again",
                    "Stop the agent, wait for it to exit, and start it again (after an upgrade, for example).",
                    "hermes-relay agent restart")
    status = add_verb(verbs, "status", "pid, version, uptime and socket; exit 3 when not running",
                   "Say whether the agent runs, with its pid, version, uptime, socket and log file. "
                   "Exits 3 when it does not run (for scripts). Never starts it.",
                   "hermes-relay agent status --json")
    logs = add_verb(verbs, "logs", "print the end of the agent's log",
                 "Print the last lines of the agent's log file; with -f, keep printing new ones.",
                 "hermes-relay agent logs -n 100\nhermes-relay agent logs -f")
    logs.add_argument("-n", "--lines", type=_count, default=DEFAULT_LOG_LINES, metavar="N",
                      help=f"how many lines (default {DEFAULT_LOG_LINES})")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    run_p = add_verb(verbs, "run", "run the agent in the foreground (for service managers)",
                  "Replace this process with the agent. Extra arguments are passed on.",
                  "hermes-relay agent run                      # logs on the terminal; Ctrl-C stops it\n"
                  "hermes-relay agent run -- --log-level DEBUG")
    run_p.add_argument("--detached", action="store_true", help="log to the log file, not the terminal")
    run_p.set_defaults(accepts_extra=True)
    install = add_verb(verbs, "install", "run the agent as a per-user service (systemd, launchd or the Windows Run key)",
                    "Write the service file for this platform's per-user service manager and enable it, "
                    "so the agent starts at login and restarts after a crash. Safe to repeat.",
                    "hermes-relay agent install --dry-run     # show the file and the commands first")
    install.add_argument("--dry-run", action="store_true", help="show what would be written and run; change nothing")
    install.add_argument("--print", dest="print_only", action="store_true",
                         help="print the service file(s) that would be written, and nothing else")
    uninstall = add_verb(verbs, "uninstall", "stop and remove the per-user service (not installed is fine)",
                      "Stop the per-user service and remove its file. Pairings stay in the store.",
                      "hermes-relay agent uninstall --dry-run")
    uninstall.add_argument("--dry-run", action="store_true", help="show what would be removed and run; change nothing")
    # --no-autostart means nothing here (these verbs decide themselves whether to start the agent);
    # --json only where a verb prints a result.
    for parser in (p, start, stop, restart, status, install, uninstall):
        add_common_flags(parser, autostart=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    verb = getattr(args, "agent_cmd", None)
    if verb is None:
        raise UsageError("agent needs a subcommand: start, stop, restart, status, logs, run, install or uninstall",
                         hint="see `hermes-relay agent --help`")
    return {"start": _start, "stop": _stop, "restart": _restart, "status": _status,
            "logs": _logs, "run": _run, "install": _install, "uninstall": _uninstall}[verb](args, ctx)


# -- start / stop / restart ------------------------------------------------------------------------
def _start(args: argparse.Namespace, ctx: Context) -> int:
    try:
        with ctx.client(autostart=False) as client:
            hello = dict(client.hello)
        started = False
    except AgentNotRunningError:
        manager = _service(ctx)
        if manager is not None:
            hello = _service_control(ctx, manager, "start")
        else:
            with ctx.client(autostart=True) as client:
                hello = dict(client.hello)
        started = True
    _report_running(args, ctx, hello, "started" if started else "already running")
    return 0


def _report_running(args: argparse.Namespace, ctx: Context, hello: dict[str, Any], what: str) -> None:
    from ...core import paths
    from .. import render

    socket, log = paths.socket_path(ctx.env), str(paths.agent_log_file(ctx.env))
    if getattr(args, "json", False):
        ctx.print_json({"state": what, "pid": hello.get("pid"), "version": hello.get("agent_version"),
                        "socket": socket, "log": log})
        return
    mark = ctx.style.ok("✓") + " " if what != "already running" else ""
    ctx.out(f"{mark}agent: {what} (pid {hello.get('pid', '?')})")
    ctx.out(f"  socket: {socket}")
    ctx.out(f"  logs:   {render.tilde(log, str(paths.home_dir(ctx.env)))}")


def _stop(args: argparse.Namespace, ctx: Context) -> int:
    manager = _service(ctx)
    if manager is not None and manager.active():
        was_running, pid = _stop_service(ctx, manager)
    else:
        was_running, pid = stop_agent(ctx)
    if getattr(args, "json", False):
        ctx.print_json({"state": "stopped" if was_running else "not running", "pid": pid})
    elif not was_running:
        ctx.out("agent: not running")
    else:
        ctx.out(ctx.style.ok("✓") + f" agent: stopped (pid {pid if pid is not None else '?'})")
    return 0


def stop_agent(ctx: Context, timeout: float = STOP_TIMEOUT) -> tuple[bool, int | None]:
    """Stop the agent and wait for it to be gone. Returns (it was running, its pid)."""
    from ...core import paths

    try:
        client = ctx.client(autostart=False)
    except AgentNotRunningError:
        return False, None
    with client:
        pid = client.hello.get("pid")
        pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
        try:
            client.stop()
        except IpcError as exc:
            if type(exc) is not IpcError:  # the agent refused; a plain IpcError is the link closing
                raise
    if not wait_until_stopped(paths.socket_path(ctx.env), pid, timeout):
        raise IpcError(f"the agent (pid {pid}) did not stop within {timeout:g}s",
                       hint="see `hermes-relay agent logs`; if it hangs, end that process yourself")
    return True, pid


def wait_until_stopped(socket_path: str, pid: int | None, timeout: float) -> bool:
    """Poll until ``pid`` has exited and, unless that pid is known, nothing listens at ``socket_path``; or
    ``timeout`` passes. Once a known pid is gone, a listener is another agent (a running `hermes-relay shell`
    starts one again at once), not the one being stopped."""
    known = pid is not None and pid > 0 and pid != os.getpid() and sys.platform != "win32"
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if not _pid_alive(pid) and (known or not _listening(socket_path)):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)


def _listening(path: str) -> bool:
    if sys.platform == "win32" or not os.path.exists(path):  # pragma: no cover - Windows: no AF_UNIX
        return False
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _pid_alive(pid: int | None) -> bool:
    # The pid is our own when the agent ran inside this process (in-process end-to-end tests).
    if pid is None or pid <= 0 or pid == os.getpid() or sys.platform == "win32":
        return False
    try:  # an agent this process autostarted is our child: reap it, or it lingers as a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    from ...core.ownership import pid_alive

    return pid_alive(pid)


def _restart(args: argparse.Namespace, ctx: Context) -> int:
    manager = _service(ctx)
    if manager is not None:
        if manager.active():
            was_running = _answers(ctx)
        else:  # a CLI-started agent would keep the service's agent from taking the instance lock
            was_running, _ = stop_agent(ctx)
        hello = _service_control(ctx, manager, "restart")
    else:
        was_running, _ = stop_agent(ctx)
        with ctx.client(autostart=True) as client:
            hello = dict(client.hello)
    what = "restarted" if was_running else "started"
    _report_running(args, ctx, hello, what)
    return 0


# -- status ----------------------------------------------------------------------------------------
def _status(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import paths
    from .. import render

    socket, log = paths.socket_path(ctx.env), str(paths.agent_log_file(ctx.env))
    try:
        with ctx.client(autostart=False) as client:
            hello = dict(client.hello)
    except AgentNotRunningError:
        if not getattr(args, "json", False):
            raise
        ctx.print_json({"running": False, "socket": socket, "log": log})
        return 3
    now = ctx.now()
    started = render.to_epoch(hello.get("started_at"))
    if getattr(args, "json", False):
        ctx.print_json({"running": True, "pid": hello.get("pid"), "version": hello.get("agent_version"),
                        "api_version": hello.get("api_version"), "started_at": started,
                        "uptime_seconds": None if started is None else max(0.0, now - started),
                        "socket": socket, "log": log})
        return 0
    ctx.out("agent: " + ctx.style.ok("running"))
    ctx.out(f"  pid:      {hello.get('pid', '?')}")
    ctx.out(f"  version:  {hello.get('agent_version', '?')} (IPC API {hello.get('api_version', '?')})")
    ctx.out(f"  uptime:   {render.uptime(started, now)}")
    ctx.out(f"  socket:   {socket}")
    ctx.out(f"  logs:     {render.tilde(log, str(paths.home_dir(ctx.env)))}")
    return 0


# -- logs ------------------------------------------------------------------------------------------
def _logs(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import paths

    path = paths.agent_log_file(ctx.env)
    try:
        lines, offset = tail(path, args.lines)
    except FileNotFoundError:
        raise NotFoundError(f"no agent log at {path}",
                            hint="the agent writes it once it has started (`hermes-relay agent start`); "
                                 f"start-up failures go to {paths.log_dir(ctx.env) / 'agent-start.err'}") from None
    except OSError as exc:
        raise NotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in lines:
        ctx.out(line)
    ctx.flush()
    if args.follow:
        follow(path, offset, ctx)
    return 0


def tail(path: Any, n: int) -> tuple[list[str], int]:
    """The last ``n`` lines of ``path`` and the file size they end at. Reads backwards in blocks."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return (lines[-n:] if n else []), end


def follow(path: Any, offset: int, ctx: Context, *, poll: float = FOLLOW_POLL,
           keep_going: Any = lambda: True) -> None:
    """Print what is appended to ``path`` from ``offset`` on; reopen it after rotation or truncation."""
    ino = _inode(path)
    pending = b""
    while keep_going():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_ino != ino or st.st_size < offset):
            ino, offset, pending = st.st_ino, 0, b""  # rotated or truncated: start from its beginning
        if st is not None and st.st_size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                ctx.out(raw.decode("utf-8", errors="replace"))
            ctx.flush()
        time.sleep(poll)


def _inode(path: Any) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of lines, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of lines, got {text!r}")
    return value


# -- run -------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace, ctx: Context) -> int:
    rest = ["--detached"] if args.detached else []
    extra = list(getattr(args, "extra", []) or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    from ..client import agent_command

    argv = [*agent_command(), *rest, *extra]
    ctx.flush()
    _execve(sys.executable, argv, dict(ctx.env))
    return 0  # only reached when tests replace _execve


# -- the per-user service --------------------------------------------------------------------------
def _service(ctx: Context) -> Any:
    """The service manager that owns the agent (installed, reachable, enabled), or None: the CLI does."""
    from ..service import platforms

    return platforms.controlling_manager(ctx.env)


def _answers(ctx: Context) -> bool:
    try:
        with ctx.client(autostart=False):
            return True
    except AgentNotRunningError:
        return False


def wait_for_agent(ctx: Context, timeout: float, *, hint: str | None = None) -> dict[str, Any]:
    """Poll until the agent answers (never starting one) and return its hello; IpcError after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            with ctx.client(autostart=False) as client:
                return dict(client.hello)
        except AgentNotRunningError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise IpcError(f"the service's agent did not answer within {timeout:g}s",
                           hint=hint or "see `hermes-relay agent logs`")
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.2)


def _service_control(ctx: Context, manager: Any, verb: str) -> dict[str, Any]:
    from ..service import plan as plans

    for step in manager.control(verb):
        plans.run_step(manager, step)
    return wait_for_agent(ctx, SERVICE_START_WAIT, hint=manager.status_hint())


def _stop_service(ctx: Context, manager: Any) -> tuple[bool, int | None]:
    from ...core import paths
    from ..service import plan as plans

    pid = None
    try:
        with ctx.client(autostart=False) as client:
            raw = client.hello.get("pid")
            pid = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        was_running = True
    except AgentNotRunningError:
        was_running = False
    for step in manager.control("stop"):
        plans.run_step(manager, step)
    if not wait_until_stopped(paths.socket_path(ctx.env), pid, STOP_TIMEOUT):
        raise IpcError(f"the agent (pid {pid}) did not stop within {STOP_TIMEOUT:g}s", hint=manager.status_hint())
    return was_running, pid


def _stop_cli_agent(ctx: Context) -> str:
    was_running, pid = stop_agent(ctx)
    if not was_running:
        return "no CLI-started agent was running"
    return f"stopped the agent the CLI had started (pid {pid if pid is not None else '?'})"


def _install(args: argparse.Namespace, ctx: Context) -> int:
    from ..service import plan as plans
    from ..service import platforms

    manager = platforms.manager_for(ctx.env)
    if args.print_only:
        targets = manager.targets()
        for target in targets:
            if len(targets) > 1:
                ctx.out(f"==> {target.path} <==")
            ctx.stdout.write(target.content.lstrip("\ufeff"))
        return 0
    stop = plans.Step("stop the agent the CLI started, if one answers", action=lambda: _stop_cli_agent(ctx))
    return _carry_out(args, ctx, plans.plan_install(manager, stop))


def _uninstall(args: argparse.Namespace, ctx: Context) -> int:
    from ..service import plan as plans
    from ..service import platforms

    return _carry_out(args, ctx, plans.plan_uninstall(platforms.manager_for(ctx.env)))


def _carry_out(args: argparse.Namespace, ctx: Context, plan: Any) -> int:
    from ..service import plan as plans

    as_json = getattr(args, "json", False)
    if args.dry_run:
        if as_json:
            ctx.print_json(_plan_json(plan, dry_run=True))
        else:
            _print_dry_run(ctx, plan)
        return 0
    plans.execute(plan, (lambda line: None) if as_json else (lambda line: ctx.out("  " + line)))
    pid = None
    if plan.starts:
        pid = wait_for_agent(ctx, SERVICE_START_WAIT, hint=plan.manager.status_hint()).get("pid")
    if as_json:
        ctx.print_json({**_plan_json(plan, dry_run=False), "pid": pid})
    else:
        _print_outcome(ctx, plan, pid)
    return 0


def _plan_json(plan: Any, *, dry_run: bool) -> dict[str, Any]:
    return {"manager": plan.manager.kind, "state": plan.state, "dry_run": dry_run,
            "files": [str(p) for p in plan.files], "steps": [step.text for step in plan.steps],
            "pending": list(plan.pending), "unreachable": plan.reason}


def _print_dry_run(ctx: Context, plan: Any) -> None:
    what = plan.manager.what
    removing = plan.state in ("uninstalled", "not installed")
    ctx.out("dry run: nothing is written, removed or run")
    if plan.state == "not installed":
        ctx.out(f"agent: no {what} is installed; nothing to do")
    elif plan.state == "uninstalled":
        ctx.out(f"would remove the {what}: {', '.join(map(str, plan.files)) or '(registration only)'}")
    elif plan.state == "already installed":
        done = "; nothing to do" if not plan.steps and plan.reason is None else ""
        ctx.out(f"agent: already installed as a {what} ({', '.join(map(str, plan.files))} unchanged){done}")
    for target, step in zip(plan.writes, plan.steps, strict=False):
        ctx.out(f"would {step.text}, mode {target.mode:04o}:")
        for line in target.content.lstrip("\ufeff").splitlines():
            ctx.out(f"    {line}".rstrip())
    rest = plan.steps[len(plan.writes):]
    if rest:
        ctx.out("would then:" if plan.writes else "would:")
        for step in rest:
            ctx.out(f"  {step.text}")
    if plan.reason is not None and not removing:
        ctx.out(f"would not enable it: {plan.reason}")
    _print_pending(ctx, plan, dry_run=True)


def _print_pending(ctx: Context, plan: Any, indent: str = "", *, dry_run: bool = False) -> None:
    if plan.reason is None or not plan.pending:
        return
    if plan.state == "uninstalled":
        told = "would not be told" if dry_run else "was not told"
        ctx.out(f"{indent}{plan.reason}, so the service manager {told}; "
                "if the service still runs, run this in a login session:")
    else:
        ctx.out(f"{indent}to enable it, run this in a login session:")
    for line in plan.pending:
        ctx.out(f"{indent}  {line}")


def _print_outcome(ctx: Context, plan: Any, pid: Any) -> None:
    from ...core import paths
    from .. import render

    what, ok = plan.manager.what, ctx.style.ok("✓") + " "
    if plan.state == "not installed":
        ctx.out(f"agent: no {what} is installed; nothing to do")
        return
    if plan.state == "uninstalled":
        ctx.out(f"{ok}agent: removed the {what}; the CLI starts the agent on demand again")
        _print_pending(ctx, plan, "  ")
        return
    if plan.reason is not None:
        ctx.out(f"agent: {plan.state} as a {what}, not enabled ({plan.reason})")
    elif plan.starts:
        ctx.out(f"{ok}agent: {plan.state} as a {what}, running (pid {pid if pid is not None else '?'})")
    elif plan.steps:
        ctx.out(f"{ok}agent: {plan.state} as a {what}")
    else:
        settled = "" if plan.manager.kind == "windows" else ", enabled and running"
        ctx.out(f"agent: already installed as a {what}{settled}; nothing changed")
    home = str(paths.home_dir(ctx.env))
    for path in plan.files:
        ctx.out(f"  file: {render.tilde(str(path), home)}")
    ctx.out(f"  logs: {render.tilde(str(paths.agent_log_file(ctx.env)), home)}")
    _print_pending(ctx, plan, "  ")
    if plan.manager.kind == "systemd" and plan.state != "already installed":
        ctx.out("  note: user services stop at logout unless lingering is on (`loginctl enable-linger`)")
    if plan.manager.kind == "windows" and plan.reason is None:
        ctx.out("  note: it starts at your next logon; `hermes-relay agent start` starts it now")
