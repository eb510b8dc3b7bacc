"""A PTY and the process on it, spawned safely from trio (Unix only).

No ``os.fork``/``pty.fork``: forking a threaded process is unsafe, and Python 3.12 warns about it (a test
run with ``filterwarnings=error`` fails). ``os.posix_spawn(setsid=True)`` makes the child a session
leader, and its file actions open the PTY's slave by path as fds 0, 1 and 2: the first terminal a
session leader opens becomes its controlling terminal on Linux, so the shell gets job control and
SIGWINCH. (macOS may need a TIOCSCTTY shim; not done.) The master is a ``trio.lowlevel.FdStream``; a
read that fails with EIO means every slave fd is closed (the shell and its children exited): EOF.
The child is reaped through a pidfd when the platform has one, else by polling ``waitpid(WNOHANG)``.
"""

from __future__ import annotations

import sys

assert sys.platform != "win32", "PTYs are POSIX only: relay/main.py refuses --terminal on Windows"

import errno  # noqa: E402
import fcntl  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import termios  # noqa: E402

import trio  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)
REAP_POLL = 0.5  # seconds between waitpid polls where there is no pidfd


class PtyProcess:
    """A process on a fresh PTY: ``stream`` is the master (read output, write input)."""

    def __init__(self, argv: list[str], env: dict[str, str], cols: int, rows: int):
        master, slave = os.openpty()
        try:
            set_size(master, cols, rows)
            _utf8_line_editing(slave)
            path = self.tty = os.ttyname(slave)
            actions = [(os.POSIX_SPAWN_OPEN, 0, path, os.O_RDWR, 0), (os.POSIX_SPAWN_DUP2, 0, 1),
                       (os.POSIX_SPAWN_DUP2, 0, 2)]
            self.pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True,
                                      setsigmask=(), setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
                                                 signal.SIGCHLD, signal.SIGWINCH))
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master_fd = master
        self.stream = trio.lowlevel.FdStream(master)  # takes ownership of the fd
        self.status: int | None = None  # the exit status once reaped
        self.exited = trio.Event()

    def resize(self, cols: int, rows: int) -> None:
        try:
            set_size(self.master_fd, cols, rows)
        except OSError:
            pass  # the master is closed: nothing to resize

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of output; b"" at EOF (EIO: the slave side is gone)."""
        try:
            return await self.stream.receive_some(n)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            cause = exc.__cause__
            if isinstance(exc, trio.ClosedResourceError) or (isinstance(cause, OSError) and cause.errno == errno.EIO):
                return b""
            raise

    async def write_some(self, data: bytes, stop: Callable[[], bool]) -> int:
        """Write a prefix of ``data``, waiting while the PTY is full (never a fatal EAGAIN); how many bytes
        were written, 0 when ``stop()`` became true first. One ``os.write`` at a time, so the caller counts
        exactly what reached the PTY (a final ack relies on it)."""
        await trio.lowlevel.checkpoint()
        while not stop():
            try:
                return os.write(self.stream.fileno(), data)
            except BlockingIOError:
                await self.stream.wait_send_all_might_not_block()
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
        return 0

    async def reap(self) -> None:
        """Wait for the child to exit and reap it (sets ``status`` and ``exited``); cancellable."""
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:
                pidfd = None
        try:
            while self.status is None:
                try:
                    done, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = self.pid, 0  # reaped elsewhere
                if done:
                    self.status = os.waitstatus_to_exitcode(status)
                    self.exited.set()
                    return
                if pidfd is not None:
                    await trio.lowlevel.wait_readable(pidfd)
                else:
                    await trio.sleep(REAP_POLL)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def kill(self, sig: int) -> None:
        """Signal the child's process group (it leads its own session, so the group is its id)."""
        if self.status is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def hangup(self) -> None:
        """SIGHUP the child's process group (the shell and its jobs), as a closing terminal does."""
        self.kill(signal.SIGHUP)

    async def aclose(self) -> None:
        await self.stream.aclose()


def _utf8_line_editing(fd: int) -> None:
    """IUTF8 where the platform has it: the kernel's line editing (a cooked-mode backspace) deletes whole
    UTF-8 characters, not their last byte."""
    flag = getattr(termios, "IUTF8", 0)
    if flag:
        attrs = termios.tcgetattr(fd)
        attrs[0] |= flag
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def find_shell(preferred: str | None, env_shell: str | None) -> str:
    """The first usable of ``preferred``, ``$SHELL``, /etc/shells' entries, /bin/sh."""
    candidates = [preferred, env_shell]
    try:
        with open("/etc/shells", encoding="utf-8", errors="replace") as f:
            candidates += [line.strip() for line in f if line.strip().startswith("/")]
    except OSError:
        pass
    for c in candidates:
        if c and os.path.isabs(c) and os.access(c, os.X_OK) and not c.endswith("/tmux"):
            return c
    return "/bin/sh"


def allowed_shell(requested: object) -> bool:
    """A shell a client may ask for: an absolute path listed in /etc/shells."""
    if not isinstance(requested, str) or not requested.startswith("/"):
        return False
    try:
        with open("/etc/shells", encoding="utf-8", errors="replace") as f:
            return requested in {line.strip() for line in f} and not requested.endswith("/tmux")
    except OSError:
        return False
