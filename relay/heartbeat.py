"""One relay-wide heartbeat instead of a task per authenticated connection.

Every connection is pinged ``interval`` seconds after it authenticated, then ``interval`` seconds after
each pong; a pong that does not come within another ``interval`` cancels the connection's serving
scope (the connection then closes with "heartbeat timeout"). The timing is that of a loop per
connection (sleep, ping, wait for the pong), but an idle connection costs one queue entry: one task
sleeps until the next ping is due, and a short task lives only while a ping waits for its pong.

All connections share one interval, so the queue is in due order by construction (an entry is added
at ``now + interval`` and ``now`` only grows): no heap, no timer per connection.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import trio
import trio_websocket

log = logging.getLogger(__name__)


class Beat:
    """One connection's place in the heartbeat: ``stop()`` when the connection ends."""

    __slots__ = ("ws", "on_timeout", "alive", "expires_in", "wait")

    def __init__(self, ws: trio_websocket.WebSocketConnection, on_timeout: trio.CancelScope,
                 expires_in: Callable[[], float] | None = None):
        self.ws: trio_websocket.WebSocketConnection | None = ws
        self.on_timeout: trio.CancelScope | None = on_timeout
        self.alive = True
        self.expires_in = expires_in  # seconds until the connection's session expires (inf: never)
        self.wait: trio.CancelScope | None = None  # the connection's current wait, whose deadline the expiry bounds

    def stop(self) -> None:
        """The connection ended: its queue entry (due up to ``interval`` later) keeps nothing of it alive."""
        self.alive = False
        self.ws = self.on_timeout = self.wait = self.expires_in = None

    def bound_wait(self) -> None:
        """The connection's wait ends no later than its session's expiry (PATCH /sessions may have moved it
        since the wait began): re-read here, once per beat, instead of by a timer per connection."""
        if self.wait is not None and self.expires_in is not None:
            self.wait.deadline = min(self.wait.deadline, trio.current_time() + max(0.0, self.expires_in()))

    def time_out(self) -> None:
        if self.on_timeout is not None:
            self.on_timeout.cancel()


class Heartbeat:
    """Pings every registered connection; ``run`` is the relay's one heartbeat task."""

    def __init__(self, interval: float):
        self.interval = interval
        self._due: deque[tuple[float, Beat]] = deque()
        self._nursery: trio.Nursery | None = None
        self._added = trio.Event()

    def add(self, ws: trio_websocket.WebSocketConnection, on_timeout: trio.CancelScope,
            expires_in: Callable[[], float] | None = None) -> Beat | None:
        """Start pinging ``ws`` (and bounding its wait by ``expires_in``, see ``Beat.bound_wait``); None (no
        heartbeat) when it is off or not running."""
        if self._nursery is None or self.interval <= 0:
            return None
        beat = Beat(ws, on_timeout, expires_in)
        self._schedule(beat)
        return beat

    def _schedule(self, beat: Beat) -> None:
        self._due.append((trio.current_time() + self.interval, beat))
        self._added.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while True:
                    if not self._due:
                        self._added = trio.Event()
                        await self._added.wait()
                        continue
                    due, beat = self._due[0]
                    if due > trio.current_time():
                        await trio.sleep_until(due)
                        continue
                    self._due.popleft()
                    if beat.alive:
                        beat.bound_wait()
                        nursery.start_soon(self._ping, beat)
            finally:
                self._nursery = None

    async def _ping(self, beat: Beat) -> None:
        """One ping; runs in the heartbeat's nursery, so it never raises."""
        ws = beat.ws
        if ws is None:
            return
        try:
            with trio.move_on_after(self.interval) as wait:
                await ws.ping()
        except trio_websocket.ConnectionClosed:
            return
        except Exception:  # supervision point: a heartbeat failure must not crash the relay
            log.exception("heartbeat_crashed")
            beat.time_out()
            return
        finally:
            del ws
        if wait.cancelled_caught:
            beat.time_out()
            return
        if beat.alive:
            self._schedule(beat)
