"""A kernel routing socket as a wakeup source: each readable burst is one "look again".

Shared by the netlink (Linux) and route-socket (macOS/BSD) backends; the messages themselves are
never parsed, the watcher takes a fresh snapshot instead.
"""

from __future__ import annotations

import errno
import socket
from typing import Final

import trio

RECV_CHUNK: Final = 65536  # larger than any single routing message; contents are discarded anyway


class SocketWakeups:
    """An open, non-blocking routing socket; ``wait`` returns ``name`` (or ``name-overrun``)."""

    def __init__(self, sock: socket.socket, name: str):
        self._sock = sock
        self.name = name

    async def wait(self) -> str:
        """Wait until the kernel reports a change, then drain the socket.

        Returns ``<name>-overrun`` when the kernel dropped messages (ENOBUFS): still just a wakeup.
        Raises OSError when the socket failed in another way.
        """
        await trio.lowlevel.wait_readable(self._sock)
        overrun = False
        while True:
            try:
                if not self._sock.recv(RECV_CHUNK):
                    break
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                overrun = True
        return f"{self.name}-overrun" if overrun else self.name

    def close(self) -> None:
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
