"""Process tools: desktop_list_processes, desktop_kill_process, desktop_find_pid_by_port (psutil).

``cpu_pct`` is the process's average over its lifetime (one snapshot cannot give a current rate).
Killing refuses pid 1, pids below 1 (which would signal whole groups) and the agent itself, so a
careless ``name`` never takes the agent or the system down; by name it signals every match.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psutil

from hermes_relay.core.desktop import COMMANDS, ToolContext, ToolError, ToolSpec

from . import _args, _thread

DEFAULT_LIMIT = 200
MAX_COMMAND = 2000  # characters of one command line kept in a listing (a JVM's can be 100 KB)
MAX_LIMIT = 10_000
_ATTRS = ["pid", "ppid", "username", "name", "cmdline", "memory_info", "cpu_times", "create_time"]


def _command(info: dict[str, Any]) -> str:
    cmdline = info.get("cmdline") or []
    return " ".join(cmdline) if cmdline else (info.get("name") or "")


def snapshot(stop: threading.Event, needle: str) -> list[dict[str, Any]]:
    """Every process whose command contains ``needle`` (case-insensitive), oldest pid first."""
    out = []
    for proc in psutil.process_iter(_ATTRS):
        _thread.check(stop)
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
    found = await _thread.run(snapshot, needle)
    return {"processes": found[:limit], "truncated": len(found) > limit, "count": min(limit, len(found)), "total": len(found)}


def _refusal(pid: int) -> str | None:
    if pid < 1:
        return "refusing to signal a pid below 1 (that would signal a process group)"
    if pid == 1:
        return "refusing to signal pid 1 (the init process)"
    if pid == os.getpid():
        return "refusing to signal the Hermes agent itself"
    return None


async def desktop_kill_process(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pid = _args.integer(args, "pid", default=None)
    name = _args.text(args, "name", default=None)
    force = _args.boolean(args, "force", False)
    sig_name = _args.choice(args, "signal", ("term", "kill"), "term").upper()
    if pid is None and name is None:
        raise ToolError('desktop_kill_process needs "pid" (a process id) or "name" (a command substring)')
    sig = signal.SIGKILL if (force or sig_name == "KILL") and hasattr(signal, "SIGKILL") else signal.SIGTERM
    if pid is not None:
        reason = _refusal(pid)
        if reason:
            raise ToolError(reason)
        targets = [pid]
    else:
        assert name is not None
        targets = [p["pid"] for p in await _thread.run(snapshot, name.lower())]
    killed: list[int] = []
    failed: list[dict[str, Any]] = []
    for target in targets:
        reason = _refusal(target)
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


def _listeners(stop: threading.Event, port: int, protocol: str) -> list[dict[str, Any]]:
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
    out: list[dict[str, Any]] = []
    for pid, conn in conns:
        host = conn.laddr.ip
        address = f"[{host}]:{conn.laddr.port}" if ":" in host else f"{host}:{conn.laddr.port}"
        entry = {"pid": pid, "address": address}
        if entry not in out:
            out.append(entry)
    return out


async def desktop_find_pid_by_port(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    port = _args.integer(args, "port", minimum=1, maximum=65535)
    protocol = _args.choice(args, "protocol", ("tcp", "udp"), "tcp")
    listeners = await _thread.run(_listeners, port, protocol)
    return {"port": port, "protocol": protocol, "listeners": listeners}


def _preview(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={args[k]}" for k in ("pid", "name", "port", "filter") if isinstance(args.get(k), (int, str)))


TOOLS = [
    ToolSpec("desktop_list_processes", COMMANDS, desktop_list_processes, preview=_preview),
    ToolSpec("desktop_kill_process", COMMANDS, desktop_kill_process, preview=_preview),
    ToolSpec("desktop_find_pid_by_port", COMMANDS, desktop_find_pid_by_port, preview=_preview),
]
