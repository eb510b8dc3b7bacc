"""The user's terminal for ``hermes-relay shell``: raw mode in, everything back out, the window size.

``RawTerminal`` saves the termios of stdin, switches it to raw mode with a hand-written ``cfmakeraw``
(``tty.cfmakeraw`` with that exact behaviour is Python 3.12+), and on ``restore`` writes ``MODE_RESET``
and sets the saved termios back with ``TCSADRAIN``. The mode reset turns off what a remote program may
leave on when it dies or the link ends under it (alternate screen, mouse reporting, bracketed paste,
focus events, application cursor keys and keypad, a hidden cursor, colours): after a detach the
user's own shell must not receive mouse moves. OPOST is off in raw mode, so text written here needs
``\\r\\n`` line ends (``crlf``).
"""

from __future__ import annotations

import sys

if sys.platform == "win32":  # a POSIX terminal; cli/commands/shell.py says so before importing this
    raise ImportError(f"{__name__} needs a POSIX terminal")

import fcntl  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import termios  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MODE_RESET = (
    b"\x1b[?1049l"  # leave the alternate screen (restores the cursor saved on entry)
    b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l"  # mouse reporting off, every protocol
    b"\x1b[?2004l"  # bracketed paste off
    b"\x1b[?1004l"  # focus events off
    b"\x1b[?1l\x1b>"  # normal cursor keys, numeric keypad
    b"\x1b[?25h"  # cursor shown
    b"\x1b[0m"  # SGR reset
)


def make_raw(mode: list[Any]) -> list[Any]:
    """What cfmakeraw(3) does to a tcgetattr list (a new list; ``mode`` is not changed)."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = mode
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
               | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB)
    cflag |= termios.CS8
    cc = list(cc)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


def window_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on ``fd``; (80, 24) when it does not say."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 80, 24
    return (cols or 80), (rows or 24)


def crlf(text: bytes) -> bytes:
    """Line ends for a terminal whose output processing is off: every LF preceded by CR."""
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a (blocking) terminal fd, retrying short writes."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


class RawTerminal:
    """stdin in raw mode while the shell runs; ``restore`` is safe to call more than once."""

    def __init__(self, in_fd: int, out_fd: int):
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.saved: list[Any] = termios.tcgetattr(in_fd)
        self.raw = False

    def enter(self) -> None:
        """Raw mode (again after a suspend: the user's shell may have changed the modes meanwhile).

        TCSANOW, not TCSAFLUSH: keys typed before the shell started are kept and sent."""
        termios.tcsetattr(self.in_fd, termios.TCSANOW, make_raw(self.saved))
        self.raw = True

    def restore(self) -> None:
        """The mode reset on the screen, then the saved termios exactly as they were."""
        try:
            write_all(self.out_fd, MODE_RESET)
        except OSError:  # the terminal went away (SIGHUP): the termios may still be set
            pass
        try:
            termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self.saved)
        except (OSError, termios.error):
            pass
        self.raw = False
