"""Child processes for the desktop tools: which shell runs a command, and killing a whole tree.

Every command starts in its own session (so its process group id is its pid). Killing a tree sends
SIGTERM to the group and to every descendant psutil saw (some leave the group with setsid), waits a
short grace for them to go, then SIGKILLs whatever is left. Zombies count as gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import Any

import psutil
import trio

KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
_POLL = 0.02


def shell_argv(command: str, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The argv that runs ``command`` through the platform shell, and the shell's short name."""
    if os.name == "nt":
        return ["cmd", "/c", command], "cmd"
    search = (env or {}).get("PATH") or os.environ.get("PATH") or os.defpath
    bash = shutil.which("bash", path=search)
    if bash:
        return [bash, "-c", command], "bash"
    return ["/bin/sh", "-c", command], "sh"


def session_kwargs() -> dict[str, Any]:
    """Popen keyword arguments that start a child in its own session / process group."""
    if sys.platform == "win32":
        import subprocess

        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def signal_tree(pid: int, members: list[psutil.Process], sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` and to each of ``members``."""
    if os.name != "nt":
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for member in members:
        try:
            member.send_signal(sig)
        except psutil.Error:
            pass


async def kill_tree(proc: trio.Process, grace: float = KILL_GRACE) -> None:
    """Terminate ``proc`` (a session leader we started) and all its descendants; shielded."""
    with trio.CancelScope(shield=True):
        members = descendants(proc.pid)
        if proc.returncode is None or members:
            signal_tree(proc.pid, members, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
            while any(alive(m) for m in members):
                await trio.sleep(_POLL)
        members = [m for m in members if alive(m)] + [m for m in descendants(proc.pid) if alive(m)]
        if proc.returncode is None or members:
            kill = getattr(signal, "SIGKILL", signal.SIGTERM)
            signal_tree(proc.pid, members, kill)
        await proc.wait()
