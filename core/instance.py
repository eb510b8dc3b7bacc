"""One agent per user, HOME and host: ``~/.hermes/agent-<host>.lock`` and the owner record inside it.

The runtime directory's lock (agent/ipc_endpoint.py) only keeps two agents off one socket. Two
shells with different ``XDG_RUNTIME_DIR`` (``su -``, cron, some ssh sessions) would each start an
agent for the same ``~/.hermes``: both connect, the relay sends calls to the newest, and approvals
in the other shell never see them. So the agent also holds an exclusive ``flock`` on a file under
``~/.hermes`` for its lifetime (the kernel drops it if the agent dies), and writes into that same
file who holds it: pid, host, socket and runtime directory. A second agent, or a CLI that finds no
agent on its own socket, reads it to say where the running one is.

The host name is part of the file name: a home shared by two machines (NFS) gets one agent per
machine, and a lock left behind by another machine never blocks this one. The record is rewritten
in place (truncate + write on the locked descriptor): replacing the file would drop the lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import fileio
from .errors import AgentAlreadyRunningError, StateError

MAX_OWNER_BYTES = 4096  # the record is a few hundred bytes; anything bigger is not ours


def host_name() -> str:
    """This machine's name as the lock file spells it (file-name safe, at most 64 characters)."""
    import socket

    raw = socket.gethostname() or "localhost"
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in raw)[:64] or "localhost"


def owner_record(*, socket_path: str, runtime_dir: str, started_at: float, pid: int | None = None,
                 host: str | None = None) -> dict[str, Any]:
    return {"pid": os.getpid() if pid is None else pid, "host": host or host_name(), "socket": socket_path,
            "runtime_dir": runtime_dir, "started_at": started_at}


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner record in a lock file (None when missing, empty or not ours)."""
    try:
        raw = fileio.read_bounded(path, limit=MAX_OWNER_BYTES)
        obj = json.loads(raw) if raw else None
    except (StateError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def running_owner(path: Path) -> dict[str, Any] | None:
    """The record of a live agent of this host in ``path`` (None: none recorded, or its process is gone).

    Read without taking the lock: probing the lock could make an agent starting at that moment fail.
    """
    owner = read_owner(path)
    if owner is None or owner.get("host") != host_name():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) would end the process on Windows
        return owner
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # alive, but not ours to signal (a stale record of another user's reused pid)
        return None
    return owner


def describe(owner: dict[str, Any] | None) -> str:
    """``pid 123 on host, socket /run/user/1000/hermes-relay/agent.sock`` (what is known of it)."""
    if not owner:
        return "its pid is not recorded"
    parts = [f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"]
    if owner.get("socket"):
        parts.append(f"socket {owner['socket']}")
    return ", ".join(parts)


@contextmanager
def hold(path: Path, owner: dict[str, Any]) -> Iterator[None]:
    """Hold the per-HOME-and-host agent lock and record ``owner`` in it, or raise AgentAlreadyRunningError
    naming the agent that holds it (and how to reach it when its socket is not this one)."""
    lock = fileio.FileLock(path, suffix="")
    if not lock.acquire(blocking=False):
        theirs = read_owner(path)
        raise already_running(path, theirs, owner.get("socket"))
    try:
        fd = lock.fd
        assert fd is not None
        data = json.dumps(owner).encode() + b"\n"
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no record behind (kill -9 does: its pid is checked)
    finally:
        lock.release()


def already_running(path: Path, theirs: dict[str, Any] | None, my_socket: str | None) -> AgentAlreadyRunningError:
    msg = f"another hermes-relay agent is already running for this user and home ({describe(theirs)}; lock {path})"
    their_socket = (theirs or {}).get("socket")
    if their_socket and my_socket and their_socket != my_socket:
        return AgentAlreadyRunningError(msg + "; it listens on another runtime directory than this shell's",
                                        hint=reach_hint(theirs or {}))
    return AgentAlreadyRunningError(
        msg, hint="use `hermes-relay agent status`, or `hermes-relay agent stop` before starting a new one")


def reach_hint(owner: dict[str, Any]) -> str:
    runtime, sock = owner.get("runtime_dir"), owner.get("socket")
    if runtime and sock and os.path.dirname(str(sock)) == runtime:
        how = f"run the CLI with HERMES_RELAY_RUNTIME_DIR={runtime}"
    elif sock:
        how = f"run the CLI with HERMES_RELAY_SOCKET={sock}"
    else:
        how = "run the CLI from the shell that started it"
    pid = owner.get("pid")
    stop = f", or stop it (`kill {pid}`) and start it from here" if pid else ""
    return f"{how} to reach it{stop}"
