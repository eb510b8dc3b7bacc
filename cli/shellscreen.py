"""What `hermes-relay shell` itself puts on the user's screen, besides the remote's output.

- the status line: reverse video on the bottom row, drawn between save and restore cursor (DECSC/DECRC,
  which also keep the remote's colours), so the remote's cursor and attributes are untouched;
- the end of a shell (``outcome``): the exit code and the line printed once the terminal is back.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Outcome:
    """How the shell ended: the exit code and what to tell the user once the terminal is back."""

    def __init__(self, code: int, message: str | None = None):
        self.code, self.message = code, message


def status_line(text: str, cols: int, rows: int) -> bytes:
    from .render import printable

    width = max(cols - 1, 1)
    line = printable(text)[:width].ljust(width)
    return f"\x1b7\x1b[{rows};1H\x1b[7m{line}\x1b[0m\x1b8".encode()


def erase_status(rows: int) -> bytes:
    return f"\x1b7\x1b[{rows};1H\x1b[2K\x1b8".encode()


def outcome(reason: str, code: Any, session: str) -> Outcome:
    """The final response of ``shell.open`` ({reason, code}) as an exit code and a message."""
    if reason == "exit":  # the remote status when it is one (a signal's -N: 1; none: 0)
        known = isinstance(code, int) and not isinstance(code, bool)
        return Outcome((code if 0 <= code <= 255 else 1) if known else 0)
    if reason == "detached":
        return Outcome(0, f"detached from {session!r} (hermes-relay sessions resume {session})")
    if reason == "killed":
        return Outcome(0, f"session {session!r} killed")
    if reason == "replaced":
        return Outcome(1, f"another hermes-relay shell took session {session!r}")
    return Outcome(1, f"lost the shell: the link to the relay did not come back (session {session!r} may live on: "
                      "hermes-relay sessions list)")
