"""Which processes a desktop call may signal or see: the refusals kill_process and job_cancel share.

Never signalled, in every mode: pids below 1 (a process group), pid 1, the agent itself, any process in
the agent's process group, the agent's ancestors (its service manager, its shell), and processes of
another user (this machine may run the agent as root). Under the ``workspace`` preset
(``confinement.kernel_commands``) the in-agent process tools are confined by these checks, not by the
kernel: they see and signal only the processes this host started, its jobs and their descendants
(a descendant that daemonised away from its job's tree is no longer counted). Under ``trusted`` they
act on the user's processes; ``full_access`` is the same, with the same refusals.
"""

from __future__ import annotations

import os
import sys
import threading

import psutil

from ....core.desktop import ToolContext
from . import _jobrecord, _thread


def refusal(pid: int) -> str | None:
    """Why ``pid`` must never be signalled by a desktop tool, or None."""
    if pid < 1:
        return "refusing to signal a pid below 1 (that would signal a process group)"
    if pid == 1:
        return "refusing to signal pid 1 (the init process)"
    me = os.getpid()
    if pid == me:
        return "refusing to signal the Hermes agent itself"
    if sys.platform != "win32":  # Windows has no process groups to signal
        if pid == os.getpgrp():
            return "refusing to signal the leader of the Hermes agent's process group"
        try:
            if os.getpgid(pid) == os.getpgrp():
                return "refusing to signal a process in the Hermes agent's own process group"
        except OSError:
            pass
    try:
        if pid in {p.pid for p in psutil.Process(me).parents()}:
            return "refusing to signal a parent of the Hermes agent (that would stop the agent too)"
        if not _same_user(psutil.Process(pid)):
            return "refusing to signal a process of another user"
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return "refusing to signal a process whose owner cannot be read"
    return None


def group_refusal(pgid: int) -> str | None:
    """Why the process group ``pgid`` must never be signalled as a whole, or None."""
    if pgid <= 1:
        return "refusing to signal process group 1 or below"
    if sys.platform != "win32" and pgid == os.getpgrp():
        return "refusing to signal the Hermes agent's own process group"
    return refusal(pgid)


def host_pids(stop: threading.Event | None, ctx: ToolContext) -> set[int] | None:
    """The pids a call may see and signal: None when not limited, else this host's jobs and their descendants."""
    confinement = ctx.confined()
    if confinement.unconfined or not confinement.kernel_commands:
        return None
    pids: set[int] = set()
    for job_id in _jobrecord.record_ids(ctx):
        if stop is not None:
            _thread.check(stop)
        record = _jobrecord.load(ctx, job_id)
        if record is None or not _jobrecord.visible(record, confinement):
            continue
        proc = _jobrecord.job_process(record)
        if proc is None:
            continue
        pids.add(proc.pid)
        try:
            pids.update(p.pid for p in proc.children(recursive=True))
        except psutil.Error:
            continue
    return pids


def _same_user(proc: psutil.Process) -> bool:
    """Windows: the account name (DOMAIN\\user), which psutil reads from the process token; a process
    of another user (or a protected one) is AccessDenied, so it is refused as unreadable."""
    if sys.platform == "win32":
        return bool(proc.username() == psutil.Process().username())
    uids = proc.uids()
    return bool(uids.real == os.getuid() and uids.effective == os.getuid())
