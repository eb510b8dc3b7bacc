"""The user's terminal for `hermes-relay shell` tests and the shell bench: a program on a fresh pty.

``Terminal`` runs any program (the real CLI, ``shell_argv(...)``, or a baseline such as a raw echo) with a
fresh pty as its stdin and stdout. The caller holds the master (it is the terminal emulator: it types and
reads the screen bytes) and the slave (to check the termios before and after, and to resize it). Reads
wait for bytes with a deadline, never sleep. tests/cli (against a fake agent), tests/e2e/shellrig.py (real
processes), the bench's shell rows (bench/shell_setup.py) and bench/interop_shell.py all drive the CLI
through this one class; tests/shell_typist.py types on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

DEADLINE = 10.0
RAW_ECHO = "stty raw -echo; exec cat"  # a raw-mode echo program: each byte comes back as cat writes it


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def shell_argv(*args: str, pre: tuple[str, ...] = ()) -> list[str]:
    """``hermes-relay [pre] shell args`` as a whole process (``pre``: global flags such as --no-autostart)."""
    return [sys.executable, "-m", "hermes_relay.cli", *pre, "shell", *args]


class Terminal:
    """A program on a fresh pty; the caller is its terminal. Its stderr goes to the file ``err``, or to the
    pty (the screen, as for a user at a terminal) when ``err`` is None."""

    def __init__(self, argv: list[str], env: dict[str, str], err: Path | None, *, cols: int = 80, rows: int = 24,
                 stdin: Any = None):
        self.master, self.slave = os.openpty()
        set_size(self.slave, cols, rows)
        self.before = termios.tcgetattr(self.slave)
        self.err_path = err
        self.screen = bytearray()
        self._closed = False
        with open(err, "wb") if err is not None else contextlib.nullcontext(self.slave) as errf:
            self.proc = subprocess.Popen(argv, stdin=self.slave if stdin is None else stdin, stdout=self.slave,
                                         stderr=errf, env={**env, "TERM": "xterm-256color"}, start_new_session=True,
                                         close_fds=True)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        """What arrives within ``timeout`` (b"" when nothing did); it is added to ``screen`` too."""
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0))
        if not ready:
            return b""
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the program closed its side (EIO)
            return b""
        self.screen += chunk
        return chunk

    def mark(self) -> int:
        """Where the screen ends now: a ``start`` for ``wait_screen`` that skips what was shown before."""
        return len(self.screen)

    def wait_screen(self, data: bytes, *, start: int = 0, timeout: float = DEADLINE) -> int:
        """Wait until ``data`` shows after offset ``start``; the offset just past it."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.screen.find(data, start)
            if at >= 0:
                return at + len(data)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{data!r} never showed within {timeout:g} s; screen: "
                                     f"{bytes(self.screen[-3000:])!r}; stderr: {self.stderr()[-3000:]!r}")
            self.read(left)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        code = self.proc.wait(timeout)
        while self.read(0):  # what it wrote before exiting
            pass
        return code

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def termios_now(self) -> list[Any]:
        return termios.tcgetattr(self.slave)

    def is_raw(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & termios.ICANON

    def stderr(self) -> str:
        """What the program wrote to stderr ("" when it goes to the screen)."""
        try:
            return self.err_path.read_text(errors="replace") if self.err_path is not None else ""
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the program's process group (its own: it runs in a new session) and reap it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def close(self) -> None:
        """Kill the program, then close both ends of the pty; a second call does nothing."""
        self.kill()
        if not self._closed:
            self._closed = True
            os.close(self.slave)
            os.close(self.master)
