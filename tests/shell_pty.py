"""The user's terminal for `hermes-relay shell` tests: the real CLI as a subprocess on a pty.

The test holds the pty's master (it is the terminal emulator: it types and reads the screen bytes) and
the slave (to check the termios before and after). Reads wait for bytes with a deadline, never sleep.
"""

from __future__ import annotations

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


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class ShellOnPty:
    def __init__(self, env: dict[str, str], args: list[str], tmp: Path, *, cols: int = 80, rows: int = 24,
                 stdin: Any = None, pre: tuple[str, ...] = ()):
        self.master, self.slave = os.openpty()
        set_size(self.slave, cols, rows)
        self.before = termios.tcgetattr(self.slave)
        self.err_path = tmp / "shell.err"
        self.screen = bytearray()
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hermes_relay.cli", *pre, "shell", *args],
                stdin=self.slave if stdin is None else stdin, stdout=self.slave, stderr=err,
                env={**env, "TERM": "xterm-256color"}, start_new_session=True, close_fds=True)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0))
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return False
        self.screen += chunk
        return bool(chunk)

    def wait_screen(self, data: bytes, *, start: int = 0, timeout: float = DEADLINE) -> int:
        """Wait until ``data`` shows after offset ``start``; the offset just past it."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.screen.find(data, start)
            if at >= 0:
                return at + len(data)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{data!r} never showed; screen: {bytes(self.screen)!r:.3000}; "
                                     f"stderr: {self.stderr()!r}")
            self._read(left)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        code = self.proc.wait(timeout)
        while self._read(0):  # what it wrote before exiting
            pass
        return code

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def termios_now(self) -> list[Any]:
        return termios.tcgetattr(self.slave)

    def is_raw(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & termios.ICANON

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        os.close(self.master)
        os.close(self.slave)
