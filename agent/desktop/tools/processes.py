"""Process tools: desktop_list_processes, desktop_kill_process, desktop_find_pid_by_port (psutil).

``cpu_pct`` is the process's average over its lifetime (one snapshot cannot give a current rate).
Killing refuses pid 1, pids below 1 (which would signal whole groups), the agent, its process group,
its ancestors and other users' processes (``_procguard``), so a careless ``name`` never takes the
agent or the system down; by name it signals every match. Under the ``workspace`` preset every tool
here sees and signals only the processes the calling host started (its jobs and their descendants).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psutil

from ....core.desktop import COMMANDS, ToolContext, ToolError, ToolSpec
from . import _args, _proc, _procguard, _thread

DEFAULT_LIMIT = 200
MAX_COMMAND = 2000  # characters of one command line kept in a listing (a JVM's can be 100 KB)
MAX_LIMIT = 10_000
_ATTRS = ["pid", "ppid", "username", "name", "cmdline", "memory_info", "cpu_times", "create_time"]


def _command(info: dict[str, Any]) -> str:
    cmdline = info.get("cmdline") or []
    return " ".join(cmdline) if cmdline else (info.get("name") or "")


def snapshot(stop: threading.Event, needle: str, ctx: ToolContext | None = None) -> list[dict[str, Any]]:
    """Every process whose command contains ``needle`` (case-insensitive), oldest pid first.

    With ``ctx`` under the workspace preset: only the processes its host started.
    """
    allowed = _procguard.host_pids(stop, ctx) if ctx is not None else None
    out = []
    for proc in psutil.process_iter(_ATTRS):
        _thread.check(stop)
        if allowed is not None and proc.pid not in allowed:
            continue
        info = proc.info
        command = _command(info)
        if needle and needle not in command.lower():
            continue
        entry: dict[str, Any] = {"pid": info["pid"], "command": command[:MAX_COMMAND]}
        if len(command) > MAX_COMMAND:
            entry["command_truncated"] = True
        if info.get("ppid") is not None:
            entry["ppid"] = info["ppid"]
        if info.get("username"):
            entry["user"] = info["username"]
        cpu, created = info.get("cpu_times"), info.get("create_time")
        if cpu is not None and created:
            entry["cpu_pct"] = round(100 * (cpu.user + cpu.system) / max(time.time() - created, 0.01), 1)
        memory = info.get("memory_info")
        if memory is not None:
            entry["mem_mb"] = round(memory.rss / (1 << 20), 1)
        out.append(entry)
    out.sort(key=lambda e: e["pid"])
    return out


async def desktop_list_processes(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    needle = _args.text(args, "filter", default="").lower()
    limit = _args.integer(args, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    found = await _thread.run(snapshot, needle, ctx)
    return {"processes": found[:limit], "truncated": len(found) > limit, "count": min(limit, len(found)), "total": len(found)}


NOT_THIS_HOSTS = ("refusing to signal a process this relay host did not start (under the workspace preset "
                  "only its jobs and their children may be signalled)")


def _refusals(stop: threading.Event, pids: list[int], ctx: ToolContext) -> dict[int, str]:
    """The refused pids among ``pids`` and why (``_procguard``'s refusals, then the host's own processes)."""
    allowed = _procguard.host_pids(stop, ctx)
    out = {}
    for pid in pids:
        _thread.check(stop)
        reason = _procguard.refusal(pid)
        if reason is None and allowed is not None and pid not in allowed:
            reason = NOT_THIS_HOSTS
        if reason:
            out[pid] = reason
    return out


async def desktop_kill_process(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pid = _args.integer(args, "pid", default=None)
    name = _args.text(args, "name", default=None)
    force = _args.boolean(args, "force", False)
    sig_name = _args.choice(args, "signal", ("term", "kill"), "term").upper()
    if pid is None and name is None:
        raise ToolError('desktop_kill_process needs "pid" (a process id) or "name" (a command substring)')
    sig = _proc.KILL if force or sig_name == "KILL" else signal.SIGTERM  # Windows: both TerminateProcess
    if pid is not None:
        targets = [pid]
    else:
        assert name is not None
        targets = [p["pid"] for p in await _thread.run(snapshot, name.lower(), ctx)]
    refused = await _thread.run(_refusals, targets, ctx)
    if pid is not None and pid in refused:
        raise ToolError(refused[pid])
    killed: list[int] = []
    failed: list[dict[str, Any]] = []
    for target in targets:
        reason = refused.get(target)
        if reason:
            failed.append({"pid": target, "error": reason})
            continue
        try:
            psutil.Process(target).send_signal(sig)
        except psutil.NoSuchProcess:
            failed.append({"pid": target, "error": "no such process"})
        except psutil.AccessDenied:
            failed.append({"pid": target, "error": "permission denied"})
        else:
            killed.append(target)
    return {"killed": killed, "failed": failed, "requested": len(targets), "signal": sig.name}


def _listeners(stop: threading.Event, port: int, protocol: str, ctx: ToolContext) -> list[dict[str, Any]]:
    def matches(conn: Any) -> bool:
        if not conn.laddr or conn.laddr.port != port:
            return False
        return protocol == "udp" or conn.status == psutil.CONN_LISTEN

    try:
        conns = [(c.pid, c) for c in psutil.net_connections(kind=protocol) if matches(c)]
    except psutil.AccessDenied:
        conns = []
        for proc in psutil.process_iter(["pid"]):
            _thread.check(stop)
            try:
                conns += [(proc.pid, c) for c in proc.net_connections(kind=protocol) if matches(c)]
            except psutil.Error:
                continue
    allowed = _procguard.host_pids(stop, ctx)
    out: list[dict[str, Any]] = []
    for pid, conn in conns:
        if allowed is not None and pid not in allowed:
            continue
        host = conn.laddr.ip
        address = f"[{host}]:{conn.laddr.port}" if ":" in host else f"{host}:{conn.laddr.port}"
        entry = {"pid": pid, "address": address}
        if entry not in out:
            out.append(entry)
    return out


async def desktop_find_pid_by_port(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    port = _args.integer(args, "port", minimum=1, maximum=65535)
    protocol = _args.choice(args, "protocol", ("tcp", "udp"), "tcp")
    listeners = await _thread.run(_listeners, port, protocol, ctx)
    return {"port": port, "protocol": protocol, "listeners": listeners}


def _preview(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={args[k]}" for k in ("pid", "name", "port", "filter") if isinstance(args.get(k), (int, str)))


TOOLS = [
    ToolSpec("desktop_list_processes", COMMANDS, desktop_list_processes, preview=_preview),
    ToolSpec("desktop_kill_process", COMMANDS, desktop_kill_process, preview=_preview),
    ToolSpec("desktop_find_pid_by_port", COMMANDS, desktop_find_pid_by_port, preview=_preview),
]
