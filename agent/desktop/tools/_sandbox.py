"""The command sandbox: how a desktop command is started under its call's confinement.

The one place the tools that start processes go through:

- ``start()`` (desktop_terminal): on Linux every command runs under a per-call reaper forked by the
  spawn server (``sandbox/spawner.py``), so nothing the command starts outlives the call; under
  ``kernel_commands`` (the ``workspace`` preset) the command is confined before exec (Landlock,
  no_new_privs, no capabilities, seccomp). Elsewhere it is a plain child in its own session (under
  sandbox-exec on macOS for workspace), killed as a tree; on Windows it also runs in a kill-on-close
  Job Object (``_winjob``), so what it leaves behind ends with the call there too.
- ``command_argv()`` (detached jobs): the argv to execute, wrapped in the confining trampoline under
  ``kernel_commands``, unchanged otherwise.

Where a workspace command cannot be confined (no Landlock), it does not run: ``ToolError``. What
the user is told about it comes from ``core.confine.commands_label`` ("kernel-enforced" from Landlock
ABI 6, "partially enforced: …" below, "refused: …" without Landlock).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Any, Protocol

import trio

from ....core.confine import Confinement, commands_label, landlock_abi
from ....core.desktop import ToolError
from . import _proc

_MODULE = "hermes_relay.agent.desktop.sandbox.spawner"
log = logging.getLogger(__name__)

_READY_TIMEOUT = 30.0  # seconds for the spawner's Python start-up on a loaded machine
_DONE_MARGIN = 5.0  # seconds past the kill grace to wait for the reaper's "done"
MOUNTS = True  # a private mount view for .git / protected paths inside roots where the kernel allows it


@functools.cache
def abi() -> int:
    return landlock_abi()


def spec_of(confinement: Confinement) -> dict[str, Any]:
    """The JSON form of the parts of ``confinement`` the sandbox enforces."""
    return {
        "roots": [str(p) for p in confinement.roots],
        "read_only": [str(p) for p in confinement.read_only],
        "protected": [str(p) for p in confinement.protected],
        "write_protected": [str(p) for p in confinement.write_protected],
        "network": confinement.network,
        "mounts": MOUNTS,
    }


def _confined(confinement: Confinement) -> bool:
    """True when commands must be confined; ToolError when they must be but cannot be here."""
    if not confinement.kernel_commands:
        return False
    label = commands_label(confinement, abi() if sys.platform.startswith("linux") else None)
    if label.startswith("refused"):
        raise ToolError("workspace commands are " + label)
    return True


def command_argv(argv: list[str], confinement: Confinement, cwd: str) -> list[str]:
    """The argv to execute for ``argv`` under ``confinement`` (unchanged when commands are unconfined)."""
    if not _confined(confinement):
        return list(argv)
    spec = spec_of(confinement)
    if sys.platform == "darwin":
        from ..sandbox import seatbelt

        return seatbelt.argv(spec, list(argv))
    request = json.dumps({"confine": spec, "abi": abi()})
    return [sys.executable, "-I", "-m", _MODULE, "--exec", request, "--", *argv]


class _Spawner:
    """The agent's one spawn server, started on first use (in a worker thread: it takes a Python
    start-up) and again if it died."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def healthy(self) -> bool:
        return self.sock is not None and self.proc is not None and self.proc.poll() is None

    def ensure(self) -> None:
        """Start the spawner unless it runs; returns once it is ready for calls (OSError if not)."""
        if sys.platform == "win32":
            raise OSError("the spawn server is Linux only")
        with self.lock:
            if self.healthy():
                return
            self.close()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                try:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-I", "-m", _MODULE], stdin=theirs.fileno(), stdout=subprocess.DEVNULL,
                        close_fds=True, start_new_session=True, env={"PATH": os.defpath},
                    )
                finally:
                    theirs.close()  # the spawner's end: its exit must read as EOF here
                ours.settimeout(_READY_TIMEOUT)
                if ours.recv(16) != b"r":
                    raise OSError("the spawner exited before it was ready")
                ours.settimeout(None)
            except OSError:
                ours.close()
                self.close()
                raise
            self.sock = ours
            log.info("sandbox_spawner_started pid=%s", self.proc.pid)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    async def send(self, fds: list[int]) -> None:
        if sys.platform == "win32":
            raise OSError("the spawn server is Linux only")
        for attempt in (0, 1):
            if not self.healthy():
                await trio.to_thread.run_sync(self.ensure, abandon_on_cancel=True)  # it finishes on its own
            sock = self.sock
            try:
                if sock is None:
                    raise OSError("the spawner is not running")
                socket.send_fds(sock, [b"c"], fds)
                return
            except OSError:
                if attempt:
                    raise
                with self.lock:
                    if self.sock is sock:
                        self.close()


_SPAWNER = _Spawner()


class Command:
    """A command started by ``start()``: its output streams, its exit, and the end of its tree."""

    stdout: trio.abc.ReceiveStream
    stderr: trio.abc.ReceiveStream

    async def wait_exit(self) -> int | None:
        """The command's return code once its own process ended (negative: the signal); None when
        its reaper vanished (killed from outside) and the end cannot be known."""
        raise NotImplementedError

    async def finish(self, *, at_once: bool, grace: float) -> None:
        """Kill whatever is left of the tree (SIGKILL ``at_once``, else SIGTERM, ``grace``, SIGKILL)."""
        raise NotImplementedError


class _Reaped(Command):
    ctl: trio.socket.SocketType
    buffer: bytes
    returncode: int | None
    done: bool

    def __init__(self, ctl: trio.socket.SocketType, stdout_fd: int, stderr_fd: int) -> None:
        if sys.platform == "win32":
            raise OSError("the spawn server is Linux only")
        self.ctl = ctl
        self.buffer = b""
        self.stdout = trio.lowlevel.FdStream(stdout_fd)
        self.stderr = trio.lowlevel.FdStream(stderr_fd)
        self.returncode: int | None = None
        self.done = False

    async def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.ctl.recv(4096)
            if not chunk:
                return ""
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    async def wait_exit(self) -> int | None:
        while self.returncode is None:
            line = await self.line()
            if not line:
                return None
            if line.startswith("exit "):
                self.returncode = int(line[5:])
        if self.buffer.startswith(b"done\n"):
            self.done = True  # the reaper found nothing left behind
        return self.returncode

    async def finish(self, *, at_once: bool, grace: float) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(grace + _DONE_MARGIN):
                try:
                    if not self.done:
                        await self.ctl.send(b"K" if at_once else b"T")
                        while (line := await self.line()) and line != "done":
                            if line.startswith("exit "):
                                self.returncode = int(line[5:])
                except OSError:
                    pass
            self.ctl.close()
            for stream in (self.stdout, self.stderr):
                await stream.aclose()


class _Plain(Command):
    """A plain child in its own session (macOS; Linux without the spawner; Windows, in a Job Object)."""

    def __init__(self, proc: trio.Process, job: _KillJob | None = None) -> None:
        self.proc = proc
        self.job = job
        assert proc.stdout is not None and proc.stderr is not None
        self.stdout, self.stderr = proc.stdout, proc.stderr

    async def wait_exit(self) -> int | None:
        return await self.proc.wait()

    async def finish(self, *, at_once: bool, grace: float) -> None:
        with trio.CancelScope(shield=True):
            if self.job is not None:
                self.job.terminate()  # every process in the job, orphans included (Windows has no gentler stop)
            if self.proc.returncode is None:
                await _proc.kill_tree(self.proc, grace)
            elif at_once and sys.platform != "win32":
                _proc.signal_tree(self.proc.pid, [], signal.SIGKILL)
            if self.job is not None:
                self.job.close()
            for stream in (self.stdout, self.stderr):
                await stream.aclose()


class _KillJob(Protocol):
    """What ``_Plain`` needs of a Windows Job Object (``_winjob.KillOnClose``)."""

    def terminate(self) -> None: ...

    def close(self) -> None: ...


def _job_for(pid: int) -> _KillJob | None:
    """Windows: a kill-on-close Job Object holding ``pid``; None elsewhere, or when Windows refused one
    (then the psutil tree is all that is killed, and the reason is logged)."""
    if sys.platform != "win32":
        return None
    from . import _winjob

    try:
        job = _winjob.KillOnClose()
    except OSError as exc:
        log.warning("desktop_job_object_failed error=%s (the command's tree is killed through psutil)", exc)
        return None
    try:
        job.add(pid)
    except OSError as exc:
        job.close()
        log.warning("desktop_job_object_failed error=%s (the command's tree is killed through psutil)", exc)
        return None
    return job


async def _start_plain(argv: list[str], cwd: str, env: dict[str, str], confinement: Confinement) -> Command:
    try:
        proc = await trio.lowlevel.open_process(
            _proc.command_line(command_argv(argv, confinement, cwd)), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env, **_proc.session_kwargs(),
        )
    except OSError as exc:
        raise ToolError(f"could not start {argv[0]}: {exc.strerror or exc}") from exc
    return _Plain(proc, _job_for(proc.pid))


async def start(argv: list[str], *, cwd: str, env: dict[str, str], confinement: Confinement,
                grace: float = _proc.KILL_GRACE) -> Command:
    """Start ``argv`` (stdin closed, its own session) under ``confinement``; ToolError when it cannot start."""
    confined = _confined(confinement)
    if not sys.platform.startswith("linux"):
        return await _start_plain(argv, cwd, env, confinement)
    request = {"argv": argv, "cwd": cwd, "env": env, "grace": grace,
               "confine": spec_of(confinement) if confined else None, "abi": abi()}
    body = json.dumps(request).encode("utf-8", "surrogatepass")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        try:
            await _SPAWNER.send([theirs.fileno(), out_w, err_w])
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)
    except BaseException as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        ours.close()
        if not isinstance(exc, OSError):
            raise
        if confined:
            raise ToolError(f"could not start the command sandbox, so the command did not run: {exc}") from exc
        log.warning("sandbox_spawner_failed error=%s (commands run without a reaper)", exc)
        return await _start_plain(argv, cwd, env, confinement)
    command = _Reaped(trio.socket.from_stdlib_socket(ours), out_r, err_r)
    try:
        await command.ctl.send(struct.pack(">I", len(body)))
        view = memoryview(body)
        while view:
            sent = await command.ctl.send(view[:1 << 20])
            view = view[sent:]
        line = await command.line()
    except BaseException:
        await command.finish(at_once=False, grace=grace)
        raise
    if line.startswith("started "):
        return command
    await command.finish(at_once=True, grace=grace)
    if line.startswith("error "):
        raise ToolError(line[6:])
    # No answer at all: the reaper died (killed from outside) before it could say the command started.
    raise ToolError("the command sandbox ended unexpectedly before the command started" if not line
                    else "the command sandbox failed to start the command")
