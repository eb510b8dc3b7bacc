"""Child processes for the desktop tools: which shell runs a command, and killing a whole tree.

POSIX: every command starts in its own session (so its process group id is its pid). Killing a tree
sends SIGTERM to the group and to every descendant psutil saw (some leave the group with setsid),
waits a short grace for them to go, then SIGKILLs whatever is left. Zombies count as gone.

Windows has no process groups to signal and no SIGKILL: a desktop_terminal command runs in a Job
Object that kills everything in it when closed (``_winjob``: orphans whose parent exited are in it
too, where a psutil walk by parent pid would miss them); without one (the job could not be made) and
for detached jobs the tree is the command plus its psutil descendants, each ended with
TerminateProcess (psutil's ``terminate``/``kill``; ``KILL`` is SIGTERM there, which psutil maps to
TerminateProcess: Windows has no polite stop for a console-less process).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import Any, Final

import psutil
import trio

KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
_POLL = 0.02

# Windows process creation flags (winbase.h); spelled out so the choice is testable on every platform.
CREATE_NEW_PROCESS_GROUP: Final = 0x00000200
DETACHED_PROCESS: Final = 0x00000008
CREATE_NO_WINDOW: Final = 0x08000000
CREATE_BREAKAWAY_FROM_JOB: Final = 0x01000000

# The strongest signal: SIGKILL on POSIX; on Windows SIGTERM, which psutil and Popen turn into TerminateProcess.
if sys.platform == "win32":
    KILL: Final = signal.SIGTERM
else:
    KILL: Final = signal.SIGKILL


def shell_argv(command: str, env: dict[str, str] | None = None, platform: str = sys.platform) -> tuple[list[str], str]:
    """The argv that runs ``command`` through the platform shell, and the shell's short name."""
    if platform == "win32":
        comspec = (env or {}).get("COMSPEC") or os.environ.get("COMSPEC") or "cmd.exe"
        return [comspec, "/d", "/s", "/c", command], "cmd"
    search = (env or {}).get("PATH") or os.environ.get("PATH") or os.defpath
    bash = shutil.which("bash", path=search)
    if bash:
        return [bash, "-c", command], "bash"
    return ["/bin/sh", "-c", command], "sh"


def command_line(argv: list[str], platform: str = sys.platform) -> str | list[str]:
    """What Popen is given for ``argv``: the list, except a ``cmd /d /s /c COMMAND`` on Windows.

    Popen joins a list with the C runtime's quoting (``\\"``), which cmd.exe does not read: a quoted
    argument would arrive with backslashes in it. ``/s`` makes cmd strip only the outer quotes, so the
    command line ``"CMD" /d /s /c "COMMAND"`` runs COMMAND exactly as typed (Node's ``shell: true`` does so).
    """
    if platform == "win32" and len(argv) == 5 and argv[1:4] == ["/d", "/s", "/c"]:
        return f'"{argv[0]}" /d /s /c "{argv[4]}"'
    return argv


def creation_flags(platform: str = sys.platform, *, detached: bool = False, breakaway: bool = False) -> int:
    """Windows ``creationflags`` for a child of the desktop tools (0 elsewhere).

    Every child gets its own process group (a Ctrl+C in the agent's console does not reach it) and no
    console window (the agent has none to share; a console program would otherwise open one).
    ``detached`` (the job runner) also leaves the agent's console for good, as the double fork does on
    POSIX; ``breakaway`` leaves the Job Object the agent itself may run in (a terminal or a service
    host closing its job would otherwise kill every running desktop job with it).
    """
    if platform != "win32":
        return 0
    flags = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    if detached:
        flags |= DETACHED_PROCESS
    if breakaway:
        flags |= CREATE_BREAKAWAY_FROM_JOB
    return flags


def session_kwargs(platform: str = sys.platform, **flags: bool) -> dict[str, Any]:
    """Popen keyword arguments that start a child in its own session / process group."""
    if platform == "win32":
        return {"creationflags": creation_flags(platform, **flags)}
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


def signal_tree(pid: int, members: list[psutil.Process], sig: int, platform: str = sys.platform) -> None:
    """Send ``sig`` to the process group led by ``pid`` (Windows: to ``pid`` itself) and to each of ``members``."""
    if platform == "win32" or sys.platform == "win32":
        try:
            psutil.Process(pid).send_signal(sig)
        except psutil.Error:
            pass
    else:
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
            signal_tree(proc.pid, members, KILL)
        await proc.wait()
