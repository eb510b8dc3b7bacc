"""Reading a child process's output line by line with a deadline (select + os.read, no threads).

Used where the CLI starts a relay and must wait for its "listening on URL" line (``demo``), and by
the end-to-end tests. Bytes after a line are kept for the next ``read``: a TLS relay prints its URL
and its pin in one burst.
"""

from __future__ import annotations

import os
import select
import time
from typing import IO


class LineReader:
    def __init__(self, stream: IO[bytes]):
        self._fd = stream.fileno()
        self._buf = b""

    def read(self, timeout: float) -> str:
        """The next line (stripped). TimeoutError after ``timeout`` seconds, EOFError at end of output."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no output within {timeout:g}s")
            chunk = os.read(self._fd, 4096)
            if not chunk:
                raise EOFError("the process closed its output")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()
