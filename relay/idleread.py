"""One reader for the relay's quiet connections: a heartbeat's pong is read without waking its connection.

A held connection that says nothing still answers a ping every heartbeat. Read by its own task, each pong
costs a task wake-up: trio reschedules the task, which resumes through its waits, reads, takes the pong,
and parks again with a fresh wait (new coroutine frames that the collector policy must freeze again). Most
of a relay's connections are quiet, so that wake-up was most of its idle CPU.

Here a quiet connection's task parks with this reader instead of trio's I/O manager. The reader owns an
epoll set of its own (one-shot, level-triggered: armed again at each park) whose descriptor trio watches
for it. When a parked socket has data, the reader reads it:

* whole masked pongs and nothing else (``wsframe.pongs``): the heartbeat is told, the socket is armed
  again and its task never runs;
* anything else (a message, a part of one, a close, the end of the stream): the task is woken with the
  bytes read, and handles them exactly as if it had read them itself.

A connection is quiet (``ServerSocket`` decides at each wait) once authenticated, and again after a read
that brought only control frames; any message makes it busy, so a connection in an exchange waits on trio
directly and pays nothing extra. A cancelled wait (a heartbeat timeout, a close from another task, the
relay shutting down) leaves the reader as trio's own waits do. Only plain TCP sockets on Linux park here:
TLS sockets, and other systems, read as before.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import outcome
import trio

if TYPE_CHECKING:
    import socket

    from .ws import ServerSocket

log = logging.getLogger(__name__)

BATCH = 64  # ready sockets read in one pass (~1 ms at most) before the relay's other tasks run


class IdleReader:
    """Parks quiet connections' reads (``wait``); ``run`` is the relay's one task that serves them."""

    def __init__(self) -> None:
        self._ep: Any = None  # select.epoll while ``run`` runs
        self._parked: dict[int, tuple[ServerSocket, trio.lowlevel.Task, int]] = {}
        self.pongs = 0  # pongs read here, their connection's task left parked
        self.woken = 0  # parked reads handed back to their task (a message, a close, the end)

    @staticmethod
    def create() -> IdleReader | None:
        """A reader where the system has epoll (Linux); None elsewhere (every socket reads as before)."""
        return IdleReader() if sys.platform == "linux" else None

    def stats(self) -> dict[str, int]:
        return {"parked": len(self._parked), "pongs": self.pongs, "woken": self.woken}

    async def wait(self, ws: ServerSocket, raw: socket.socket, size: int) -> bytes | None:
        """Park the calling task (``ws``'s reader) until ``raw`` brings something other than pongs: the
        bytes then read (at most ``size``; ``b""``: the stream ended or failed). None when the reader is not
        running: the caller reads for itself."""
        if sys.platform != "linux":
            return None
        ep = self._ep
        if ep is None:
            return None
        import select

        fd = raw.fileno()
        events = select.EPOLLIN | select.EPOLLONESHOT
        try:
            if ws.idle_armed:
                ep.modify(fd, events)
            else:
                try:
                    ep.register(fd, events)
                except FileExistsError:  # (a closed socket's number, its entry not yet gone)
                    ep.modify(fd, events)
                ws.idle_armed = True
        except OSError:  # a descriptor epoll refuses: this wait reads as before
            return None
        self._parked[fd] = (ws, trio.lowlevel.current_task(), size)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._parked.pop(fd, None)  # (its one-shot arming may still fire: nobody parked, ignored)
            return trio.lowlevel.Abort.SUCCEEDED

        data: bytes | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return data

    def forget(self, ws: ServerSocket, raw: socket.socket | None) -> None:
        """``ws`` is done: its descriptor leaves the epoll set (before the socket closes and its number is reused)."""
        if not ws.idle_armed or raw is None:
            return
        ws.idle_armed = False
        ep = self._ep
        if ep is not None:
            try:
                ep.unregister(raw.fileno())
            except (OSError, ValueError):  # already closed: closing took it out of the set
                pass

    async def run(self) -> None:
        if sys.platform != "linux":
            return
        import select

        ep = self._ep = select.epoll()
        rearm = select.EPOLLIN | select.EPOLLONESHOT
        parked = self._parked
        try:
            while True:
                await trio.lowlevel.wait_readable(ep)
                for fd, _ in ep.poll(0, BATCH):  # (more ready: the next pass, after the others ran)
                    entry = parked.pop(fd, None)
                    if entry is None:
                        continue  # its wait was cancelled meanwhile
                    ws, task, size = entry
                    try:
                        data = ws.idle_read(size)
                        if data is None:  # pongs only (or nothing after all): it stays parked
                            ep.modify(fd, rearm)
                            parked[fd] = entry
                            self.pongs += 1
                            continue
                    except Exception:  # supervision point: one socket's failure is that socket's alone
                        log.exception("idle_read_failed")
                        data = None  # its task reads for itself
                    self.woken += 1
                    trio.lowlevel.reschedule(task, outcome.Value(data))
        finally:
            self._ep = None
            for _, task, _ in parked.values():  # (only if this task died first: each reads for itself)
                trio.lowlevel.reschedule(task, outcome.Value(None))
            parked.clear()
            trio.lowlevel.notify_closing(ep)
            ep.close()
