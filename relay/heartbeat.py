"""One relay-wide heartbeat instead of a task per authenticated connection.

Every connection is pinged ``interval`` seconds after it authenticated, then every ``interval``
seconds; a ping whose pong has not come by the time the next one is due marks the connection timed
out and cancels its current wait (the connection then closes with "heartbeat timeout"). That is a
loop per connection's timing (ping, wait an interval for the pong), but an idle connection costs one
queue entry and no task:

* the ping is one pre-built frame written by the heartbeat task itself, straight to the socket, when
  nothing else is writing to it (relay/ws.py ``write_now``); a socket that cannot take it at once (TLS,
  a writer busy, a full send buffer) gets it from a short task through the socket's own send path;
* the pong is read by the connection's task, which calls ``Beat.pong``: a flag cleared, nothing queued; a
  quiet connection's pong is read by the relay's idle reader instead (relay/idleread.py), its task left parked;
* the entry due an interval after a ping is both the wait for its pong and the next ping.

All connections share one interval, so the queue is in due order by construction (an entry is added
at ``now + interval`` and ``now`` only grows): no heap, no timer per connection. Entries due within a
small slack of each other share one wake-up of the heartbeat task.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable

import trio
from wsproto.frame_protocol import FrameProtocol

from . import gcpolicy
from .ws import ConnectionClosed, ServerSocket

log = logging.getLogger(__name__)

PAYLOAD = b"hb"  # the heartbeat's ping payload: one heartbeat ping is in flight per connection at most
_FRAME = bytes(FrameProtocol(client=False, extensions=[]).ping(PAYLOAD))  # a server frame is never masked
MAX_SLACK = 0.05  # seconds a ping or a timeout may be late, to share a wake-up with others (more makes
# bursts: each ping brings a pong that wakes its connection, and a burst of them delays a handshake)
BURST = 16  # queue entries handled between two checkpoints (a ping is a send: ~0.5 ms of them at most)


class Beat:
    """One connection's place in the heartbeat: ``stop()`` when the connection ends. The connection's
    reader calls ``pong()`` with each pong's payload."""

    __slots__ = ("heartbeat", "ws", "timed_out", "alive", "expires_in", "round", "pending")

    def __init__(self, heartbeat: Heartbeat, ws: ServerSocket,
                 expires_in: Callable[[], float] | None = None):
        self.heartbeat: Heartbeat | None = heartbeat
        self.ws: ServerSocket | None = ws
        self.timed_out = False  # no pong came in time: the connection's loop ends (its wait is cancelled)
        self.alive = True
        self.expires_in = expires_in  # seconds until the connection's session expires (inf: never)
        self.round = 0  # pings sent so far
        self.pending = False  # a ping is waiting for its pong

    def stop(self) -> None:
        """The connection ended: its queue entries (due up to ``interval`` later) keep nothing of it alive."""
        self.alive = self.pending = False
        if self.ws is not None:
            self.ws.beat = None
        self.heartbeat = self.ws = self.expires_in = None

    def pong(self, payload: bytes | bytearray) -> None:
        """A pong came: if it answers the heartbeat's ping, the connection is alive (the next ping is
        already queued, an interval after this one)."""
        if payload == PAYLOAD:
            self.pending = False

    def bound_wait(self) -> None:
        """The connection's wait ends no later than its session's expiry (PATCH /sessions may have moved it
        since the wait began): re-read here, once per beat, instead of by a timer per connection. Only an
        expiry due before the beat after next needs a deadline; one further off is seen by a later beat."""
        wait = self.ws.wait if self.ws is not None else None
        if wait is not None and self.expires_in is not None and self.heartbeat is not None:
            left = max(0.0, self.expires_in())
            if left > self.heartbeat.lookahead:
                return  # a later beat comes first: no deadline (each one set is a heap entry in trio)
            ends = trio.current_time() + left
            if ends < wait.deadline:  # (setting a deadline costs trio's bookkeeping even when unchanged)
                wait.deadline = ends

    def time_out(self) -> None:
        if self.alive:
            self.timed_out = True
            if self.ws is not None and self.ws.wait is not None:
                self.ws.wait.cancel()


class Heartbeat:
    """Pings every registered connection; ``run`` is the relay's one heartbeat task."""

    def __init__(self, interval: float):
        self.interval = interval
        self._due: deque[tuple[float, Beat]] = deque()
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()

    @property
    def lookahead(self) -> float:
        """How far off a session's expiry is still seen in time by a later beat (a connection's beats come
        an interval apart, plus a little slack): a nearer expiry needs a deadline on the connection's wait."""
        return 2 * self.interval

    def add(self, ws: ServerSocket,
            expires_in: Callable[[], float] | None = None) -> Beat | None:
        """Start pinging ``ws`` (and bounding its wait by ``expires_in``, see ``Beat.bound_wait``); None (no
        heartbeat) when it is off or not running."""
        if self._nursery is None or self.interval <= 0:
            return None
        beat = ws.beat = Beat(self, ws, expires_in)
        self._schedule(beat)
        return beat

    def _schedule(self, beat: Beat) -> None:
        was_empty = not self._due
        self._due.append((trio.current_time() + self.interval, beat))
        if was_empty:
            self._wake.set()

    async def run(self) -> None:
        # Entries due within ``slack`` of each other are handled in one wake-up (a wake-up costs more
        # than the ping it sends); 50 ms late on a 30 s heartbeat is nothing.
        slack = min(self.interval / 500, MAX_SLACK)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                burst = 0
                while True:
                    if not self._due or self._due[0][0] > trio.current_time():
                        self._wake = trio.Event()
                        with trio.move_on_at(self._due[0][0] + slack if self._due else math.inf):
                            await self._wake.wait()
                        burst = 0
                        continue
                    burst += 1
                    if burst % BURST == 0:  # many due at once (a mass reconnect): let connections be served
                        await trio.lowlevel.checkpoint()
                        continue
                    _, beat = self._due.popleft()
                    if not beat.alive:
                        continue
                    if beat.pending:  # the last ping, an interval ago, has no pong
                        beat.pending = False
                        beat.time_out()
                        continue
                    beat.bound_wait()
                    self._ping(beat)
            finally:
                self._nursery = None

    def _ping(self, beat: Beat) -> None:
        ws = beat.ws
        if ws is None or not ws.open:
            return  # closing: the connection's own loop ends it
        beat.round += 1
        beat.pending = True
        if not ws.quiet:  # its task reads the pong: that replaces some of its frozen objects, frozen again
            gcpolicy.pinged()  # next tick (the idle reader reads a quiet one's pong without waking its task)
        self._schedule(beat)  # the next ping, or the end of the wait for this one's pong
        assert self._nursery is not None
        sent = ws.write_now(_FRAME)
        if sent == 0:
            self._nursery.start_soon(self._ping_task, beat, ws)
        elif sent < len(_FRAME):  # the socket stays held: nothing may come between the frame's two halves
            self._nursery.start_soon(self._finish, ws, _FRAME[sent:])

    async def _finish(self, ws: ServerSocket, rest: bytes) -> None:
        """The rest of a frame the socket took only in part; the wait for its pong bounds it."""
        try:
            with trio.move_on_after(self.interval):
                await ws.finish_write(rest)
        except ConnectionClosed:
            pass  # the connection is gone: its reader sees it

    async def _ping_task(self, beat: Beat, ws: ServerSocket) -> None:
        """The ping through the socket's send path; runs in the heartbeat's nursery, so it never raises."""
        try:
            with trio.move_on_after(self.interval):
                await ws.send_ping(PAYLOAD)
        except ConnectionClosed:
            beat.pending = False  # closing: the connection's own loop ends it
        except Exception:  # supervision point: a heartbeat failure must not crash the relay
            log.exception("heartbeat_crashed")
            beat.time_out()
