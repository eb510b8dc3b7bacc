"""The per-call reaper: runs one command and makes sure nothing it started outlives the call (Linux).

One reaper process per command, forked by the spawner (never the agent itself: as a subreaper the
agent would collect orphans and race trio's own child waits). It becomes a child subreaper, so every
process the command leaves behind (``nohup``, ``setsid``, ``( … & )``) is re-parented to it rather
than to init, forks the command in a new session (confined first when the call asks for it) and
reports on its control socket, one line each:

    started PID | error MESSAGE     the command runs, or could not be started (the reaper then exits)
    exit RETURNCODE                 the command's own process ended (negative: killed by that signal)
    done                            every descendant is gone; the reaper exits

The agent asks for the end with one byte: ``K`` kills what is left at once (after the command
exited), ``T`` (or the socket closing: the agent went away) sends SIGTERM to every descendant, waits
``grace`` seconds, then SIGKILLs until none is left. The request arrives on the same socket first:
a 4-byte big-endian length and a JSON object (argv, cwd, env, confine, grace).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any, Final

from . import confine_self

if sys.platform != "linux":  # fork, pidfds, subreapers: the spawner is started only on Linux (tools/_sandbox)
    raise ImportError(f"{__name__} is Linux only")

_PR_SET_CHILD_SUBREAPER: Final = 36
_KILL_POLL: Final = 0.05
_MAX_FD: Final = 1 << 20
IDLE_EXIT: Final = 120.0  # seconds a reaper waits for a call before it leaves (the spawner keeps one)
_DEFAULT_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE,
                           signal.SIGXFSZ)
MAX_REQUEST: Final = 64 << 20


def _descendants(me: int) -> list[int]:
    """Every live process below ``me``, found through /proc (parents first)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    out, queue = [], list(children.get(me, []))
    while queue:
        pid = queue.pop()
        out.append(pid)
        queue.extend(children.get(pid, []))
    return out


def _read_request(ctl: socket.socket) -> dict[str, Any]:
    head = ctl.recv(4, socket.MSG_WAITALL)
    if len(head) < 4:
        raise EOFError("the agent closed the call before sending it")
    (size,) = struct.unpack(">I", head)
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = bytearray()
    while len(body) < size:
        chunk = ctl.recv(min(size - len(body), 1 << 20))
        if not chunk:
            raise EOFError("the agent closed the call mid-request")
        body += chunk
    request = json.loads(body)
    if not isinstance(request, dict):
        raise ValueError("request is not an object")
    return request


class Reaper:
    def __init__(self) -> None:
        self.ctl = socket.socket()  # replaced by the call's control socket
        self.me = os.getpid()
        self.main_pid = 0
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # signals wake select() through it
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self.stop: bytes | None = None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _on_stop(self, *_: object) -> None:
        self.stop = self.stop or b"T"

    def say(self, line: str) -> None:
        try:
            self.ctl.sendall(line.encode("utf-8", "backslashreplace") + b"\n")
        except OSError:
            self.stop = self.stop or b"T"

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def reset(self) -> None:
        """Ready for the next call: the previous one's command and descendants are all reaped."""
        self.ctl.close()
        self.main_pid = 0
        self.stop = None
        self.drain_wakeups()
        os.chdir("/")  # hold no folder of the last call busy

    def _wait(self, timeout: float | None, *, control: bool = True) -> None:
        fds = [self.wake_r, self.ctl.fileno()] if control else [self.wake_r]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if self.wake_r in ready:
            self.drain_wakeups()
        if control and self.ctl.fileno() in ready:
            try:
                data = self.ctl.recv(64)
            except OSError:
                data = b""
            self.stop = self.stop or (data[:1] if data[:1] in (b"K", b"T") else b"T")

    def reap(self) -> bool:
        """Collect exited children; False once there is no child left at all."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.main_pid:
                self.say(f"exit {os.waitstatus_to_exitcode(status)}")

    def start(self, request: dict[str, Any]) -> bool:
        argv = [str(a) for a in request["argv"]]
        if request.get("confine") is None:
            return self._spawn(argv, request)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            _child(argv, request, err_w)  # never returns
        os.close(err_w)
        with os.fdopen(err_r, "rb") as f:
            failure = f.read()
        self.main_pid = pid
        if failure:
            os.waitpid(pid, 0)
            self.say("error " + failure.decode("utf-8", "replace"))
            return False
        self.say(f"started {pid}")
        return True

    def _spawn(self, argv: list[str], request: dict[str, Any]) -> bool:
        """An unconfined command: posix_spawn (vfork-like, no copy of this process), about 10 times
        cheaper than fork + exec from Python."""
        try:
            os.chdir(str(request["cwd"]))
            self.main_pid = os.posix_spawn(
                argv[0], argv, {str(k): str(v) for k, v in dict(request["env"]).items()},
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, int(request["stdout_fd"]), 1),
                              (os.POSIX_SPAWN_DUP2, int(request["stderr_fd"]), 2)],
                setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=(),
            )
        except OSError as exc:
            self.say(f"error could not start {argv[0]}: {exc.strerror or exc}")
            return False
        except ValueError as exc:  # an argument or variable the OS cannot take (NUL, unencodable)
            self.say(f"error could not start {argv[0]}: {exc}")
            return False
        self.say(f"started {self.main_pid}")
        return True

    def run(self, grace: float) -> None:
        while self.stop is None:
            if not self.reap():
                self.say("done")  # the command ended and left nothing behind: no need to be asked
                return
            self._wait(None)
        self.finish(self.stop == b"K", grace)

    def finish(self, at_once: bool, grace: float = 1.0) -> None:
        if not at_once:
            for pid in _descendants(self.me):
                _kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.reap():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wait(min(left, _KILL_POLL), control=False)
        while self.reap():
            for pid in _descendants(self.me):
                _kill(pid, signal.SIGKILL)
            self._wait(_KILL_POLL, control=False)
        self.say("done")


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _child(argv: list[str], request: dict[str, Any], err_w: int) -> None:
    """In the forked command process: stdio, session, confinement, exec. Reports failures on ``err_w``."""
    try:
        for sig in _DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(int(request["stdout_fd"]), 1)
        os.dup2(int(request["stderr_fd"]), 2)
        os.closerange(3, err_w)  # nothing but stdio reaches the command (err_w closes at exec)
        os.closerange(err_w + 1, _MAX_FD)
        os.chdir(str(request["cwd"]))
        env = {str(k): str(v) for k, v in dict(request["env"]).items()}
        if request.get("confine") is not None:
            try:
                confine_self.apply(request["confine"], int(request["abi"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                os.write(err_w, f"could not confine the command: {exc}".encode())
                os._exit(126)
        os.execve(argv[0], argv, env)
    except OSError as exc:
        os.write(err_w, f"could not start {argv[0]}: {exc.strerror or exc}".encode())
    except BaseException as exc:  # noqa: BLE001 - nothing may escape a forked child
        try:
            os.write(err_w, f"could not start {argv[0]}: {exc}".encode())
        except BaseException:  # noqa: BLE001
            pass
    os._exit(127)


def _tell(notify: int, what: str) -> None:
    try:
        os.write(notify, f"{what} {os.getpid()}\n".encode())
    except OSError:
        pass  # the spawner is gone: the agent starts another one; this call still runs to its end


def standby(sock: socket.socket, notify: int) -> None:
    """A reaper forked ahead of its calls: it takes calls off the spawner's socket one at a time and
    serves each to its end, telling the spawner on ``notify`` (``b PID`` busy, ``i PID`` idle again,
    ``x PID`` leaving after IDLE_EXIT s without a call, ``q PID`` the agent went away). Between calls
    nothing of the previous one is left (every descendant was reaped). Exits the process."""
    code = 0
    try:
        os.setsid()
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), ctypes.c_ulong(0),
                                                ctypes.c_ulong(0), ctypes.c_ulong(0))
        reaper = Reaper()
        sock.setblocking(False)
        while reaper.stop is None:
            ready, _, _ = select.select([sock.fileno(), reaper.wake_r], [], [], IDLE_EXIT)
            if not ready:
                _tell(notify, "x")
                break
            if sock.fileno() not in ready:
                reaper.drain_wakeups()
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 16, 3)
            except BlockingIOError:
                continue  # another standby took it
            except OSError:
                msg, fds = b"", []
            if len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                if not msg:
                    _tell(notify, "q")
                    break
                continue
            _tell(notify, "b")
            serve(reaper, *fds)
            reaper.reset()
            _tell(notify, "i")
    except BaseException:  # noqa: BLE001 - a forked child must never return into the spawner's loop
        code = 1
    os._exit(code)


def serve(reaper: Reaper, ctl_fd: int, out_fd: int, err_fd: int) -> None:
    """One call, start to end: read the request, start the command, reap until nothing is left."""
    for fd in (ctl_fd, out_fd, err_fd):
        os.set_inheritable(fd, False)
    reaper.ctl.close()
    reaper.ctl = ctl = socket.socket(fileno=ctl_fd)
    try:
        try:
            request = _read_request(ctl)
        except (EOFError, OSError, ValueError) as exc:
            reaper.say(f"error bad request: {exc}")
            return
        request.update(stdout_fd=out_fd, stderr_fd=err_fd)
        try:
            started = reaper.start(request)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reaper.say(f"error could not start the command: {exc}")
            started = False
    finally:
        os.close(out_fd)
        os.close(err_fd)
    if started:
        reaper.run(float(request.get("grace", 1.0)))
