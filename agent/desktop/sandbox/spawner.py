"""The spawn server and the exec trampoline behind every command a desktop tool starts (Linux).

``python -I -m hermes_relay.agent.desktop.sandbox.spawner`` is started once by the agent, with a
``SOCK_SEQPACKET`` socket as stdin. It is single-threaded and does one thing: it keeps at least one
idle reaper (``reaper.standby``) forked ahead. Reapers take messages off that socket (three file
descriptors: the call's control socket, its stdout and stderr pipes), serve the call to its end and
wait for the next, reporting busy/idle on a pipe; the spawner forks another only when none is idle.
Sequential calls thus cost no process start and no fork at all, where a Python trampoline per call
costs 20-30 ms; and the confinement (Landlock, capabilities, seccomp) is applied in a forked
single-threaded process, never in the threaded agent. Its children are reaped by the kernel (SIGCHLD
ignored); it exits when the agent closes its socket.

``… spawner --exec SPEC -- ARGV…`` is the trampoline for detached commands (jobs): it confines
itself as SPEC says (the JSON of ``tools/_sandbox.spec_of``) and executes ARGV in place, so the
job's pid is the command's. It never runs ARGV unconfined: a failure prints the reason and exits 126.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time

from . import confine_self, reaper

if sys.platform != "linux":  # fork, pidfds, subreapers: the spawner is started only on Linux (tools/_sandbox)
    raise ImportError(f"{__name__} is Linux only")


def _fork_standby(sock: socket.socket, notify: int) -> tuple[int, int] | None:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        reaper.standby(sock, notify)  # never returns
    try:
        return pid, os.pidfd_open(pid)
    except OSError:
        return None  # already gone


def serve(sock: socket.socket) -> int:
    """Keep at least one idle reaper waiting for calls; return when the agent went away."""
    gc.freeze()  # what exists now is never collected: fewer pages copied in each forked reaper
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the reapers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    notify_r, notify_w = os.pipe2(os.O_CLOEXEC)
    reapers: dict[int, int] = {}  # pid -> pidfd
    idle: set[int] = set()
    pending = b""
    ready_sent = False
    while True:
        if not idle:
            forked = _fork_standby(sock, notify_w)
            if forked is None:
                time.sleep(0.05)  # it died at once: try again, not in a tight loop
                continue
            reapers[forked[0]] = forked[1]
            idle.add(forked[0])
            if not ready_sent:
                sock.send(b"r")  # the agent waits for this before its first call
                ready_sent = True
        pidfds = {fd: pid for pid, fd in reapers.items()}
        ready, _, _ = select.select([notify_r, *pidfds], [], [])
        for fd in ready:
            if fd in pidfds:  # a reaper exited
                os.close(fd)
                reapers.pop(pidfds[fd], None)
                idle.discard(pidfds[fd])
        if notify_r in ready:
            pending += os.read(notify_r, 4096)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                what, _, pid_text = line.partition(b" ")
                pid = int(pid_text or 0)
                if what == b"q":
                    return 0  # the agent went away
                if what == b"i" and pid in reapers:
                    idle.add(pid)
                else:
                    idle.discard(pid)


def exec_confined(spec_json: str, argv: list[str]) -> int:
    try:
        request = json.loads(spec_json)
        confine_self.apply(request["confine"], int(request["abi"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"hermes-relay: could not confine the command, so it did not run: {exc}", file=sys.stderr)
        return 126
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"hermes-relay: could not start {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
    return 127


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[1] == "--exec" and argv[3] == "--":
        return exec_confined(argv[2], argv[4:])
    return serve(socket.socket(fileno=0))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
