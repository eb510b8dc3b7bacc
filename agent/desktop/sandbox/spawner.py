"""The spawn server and the exec trampoline behind every command a desktop tool starts (Linux).

``python -I -m hermes_relay.agent.desktop.sandbox.spawner`` is started once by the agent, with a
``SOCK_SEQPACKET`` socket as stdin. It is single-threaded and does one thing: for each message (three
file descriptors: the call's control socket, its stdout and stderr pipes) it forks a reaper
(``reaper.serve``). Forking this small, idle process costs about a millisecond, where starting a
Python trampoline per call costs 20-30 ms; and the confinement (Landlock, capabilities, seccomp) is
applied in a forked single-threaded process, never in the threaded agent. Its children are reaped by
the kernel (SIGCHLD ignored); it exits when the agent closes its socket.

``… spawner --exec SPEC -- ARGV…`` is the trampoline for detached commands (jobs): it confines
itself as SPEC says (the JSON of ``tools/_sandbox.spec_of``) and executes ARGV in place, so the
job's pid is the command's. It never runs ARGV unconfined: a failure prints the reason and exits 126.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from . import confine_self, reaper


def serve(sock: socket.socket) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(sock, 16, 3)
        except InterruptedError:
            continue
        except OSError:
            return 0
        if not fds:
            return 0  # the agent went away
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            reaper.serve(*fds)  # never returns
        for fd in fds:
            os.close(fd)


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
