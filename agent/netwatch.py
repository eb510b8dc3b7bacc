"""Watch the network and report changes that may need a re-probe.

``InterfaceWatcher.run`` loops: await a wakeup, take a snapshot, diff it against the last one with
``core.netif.diff``, send any ``NetChange`` (major and minor; consumers decide), then sleep
``debounce``. Wakeups only say "look again": they come from an OS source (NETLINK_ROUTE on Linux,
a route socket on macOS, polling elsewhere or when the OS source cannot be opened), from ``poke()``
(tests, the sleep/wake detector), or from a safety timer, because a lost
notification must not leave a stale snapshot forever. Wakeups that arrive while a look or the
debounce sleep is in progress are merged into one later look, so a burst shorter than the debounce
costs at most two looks: one at its first event and one after the debounce.

Snapshots are taken synchronously on the trio thread, not via ``trio.to_thread``: they are a few
local kernel queries (getifaddrs, a route-table read) with no network I/O, the netifaces C extension
gives no concurrency to win, and the thread hop would let an autojump clock race ahead in tests.

Rejected: acting on each OS message (a busy host sends many per minute), and parsing messages to
pre-filter them (the debounce plus the diff filter the same noise with far less platform code).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Final, Protocol

import trio

from ..core.netif import InterfaceSnapshot, NetChange, diff
from . import _netwatch_darwin, _netwatch_linux
from ._netwatch_poll import DEFAULT_POLL_INTERVAL, PollWakeups
from .clockwatch import next_tick
from .interfaces import snapshot_interfaces

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE: Final = 1.0  # a Wi-Fi join is a link/address/route burst well under a second
DEFAULT_SAFETY_INTERVAL: Final = 60.0  # re-look at least this often in case a notification was lost

__all__ = [
    "DEFAULT_DEBOUNCE",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_SAFETY_INTERVAL",
    "InterfaceWatcher",
    "WakeupSource",
]


class WakeupSource(Protocol):
    """An open OS event source; each ``wait()`` returns when the network may have changed."""

    async def wait(self) -> str:
        """Block until the next wakeup; return a short reason for logs. May raise ``OSError``."""
        ...

    def close(self) -> None: ...


class InterfaceWatcher:
    """Turn OS network events into ``NetChange`` messages on a channel.

    Args:
        snapshot: reads the current interfaces; the seam tests replace. May raise ``OSError``,
            which skips that look.
        wakeups: opens the wakeup source; None picks the platform's best (``backend`` says which).
            If opening raises ``OSError``, or the source later fails, the watcher polls instead.
        debounce: seconds to wait after each look so bursts coalesce.
        poll_interval: seconds between looks when polling.
        safety_interval: look at least this often even without wakeups (``math.inf`` disables).

    Attributes:
        backend: ``"netlink"``, ``"route-socket"``, ``"poll"`` or ``"injected"``; becomes ``"poll"``
            if the chosen source cannot be opened or fails.
        current: the last snapshot taken, or None before ``run`` has taken one.
    """

    def __init__(
        self,
        *,
        snapshot: Callable[[], InterfaceSnapshot] = snapshot_interfaces,
        wakeups: Callable[[], WakeupSource] | None = None,
        debounce: float = DEFAULT_DEBOUNCE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        safety_interval: float = DEFAULT_SAFETY_INTERVAL,
    ):
        self._snapshot = snapshot
        self._debounce = debounce
        self._poll_interval = poll_interval
        self._safety_interval = safety_interval
        self._open_wakeups: Callable[[], WakeupSource]
        if wakeups is not None:
            self.backend, self._open_wakeups = "injected", wakeups
        elif sys.platform.startswith("linux"):
            self.backend, self._open_wakeups = "netlink", _netwatch_linux.open_netlink_wakeups
        elif sys.platform == "darwin":
            self.backend, self._open_wakeups = "route-socket", _netwatch_darwin.open_route_wakeups
        else:
            self.backend, self._open_wakeups = "poll", self._open_poll
        self.current: InterfaceSnapshot | None = None
        self._reasons: list[str] = []
        self._wakeup = trio.Event()
        self._source: WakeupSource = PollWakeups(poll_interval)  # replaced when run() opens one

    def poke(self, reason: str = "poke") -> None:
        """Ask for a look soon (after the current debounce, if one is running). Never blocks.

        Call from the trio thread only.
        """
        self._reasons.append(reason)
        self._wakeup.set()

    async def run(
        self,
        send_channel: trio.MemorySendChannel[NetChange],
        *,
        task_status: trio.TaskStatus[InterfaceSnapshot | None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until cancelled, sending each change on ``send_channel``.

        The initial snapshot is not sent; it is ``task_status.started``'s value and ``current``.
        ``send_channel`` is closed when this returns, so the receiver's ``async for`` ends.

        Args:
            send_channel: where ``NetChange`` messages go; sending applies backpressure.
            task_status: for ``nursery.start``; started with the initial snapshot (None if it failed).
        """
        async with send_channel:
            self._source = self._open_source()
            try:
                self._take_snapshot()
                log.info("netwatch_started backend=%s %s", self.backend, _summary(self.current))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump)
                    task_status.started(self.current)
                    await self._loop(send_channel)
            finally:
                self._source.close()

    async def _loop(self, send_channel: trio.MemorySendChannel[NetChange]) -> None:
        while True:
            with trio.move_on_at(next_tick(self._safety_interval)):  # with the agent's other periodic looks
                await self._wakeup.wait()
            reasons, self._reasons, self._wakeup = self._reasons or ["safety"], [], trio.Event()
            old = self.current
            new = self._take_snapshot()
            log.debug("netwatch_look reasons=%s", ",".join(sorted(set(reasons))))
            if new is not None:
                change = diff(old, new)
                if change is not None:
                    await send_channel.send(change)
            await trio.sleep(self._debounce)

    async def _pump(self) -> None:
        while True:
            try:
                reason = await self._source.wait()
            except OSError as exc:
                log.warning("netwatch_backend_failed backend=%s error=%r; polling", self.backend, exc)
                self._source.close()
                self._source, self.backend = self._open_poll(), "poll"
                continue
            self.poke(reason)

    def _open_source(self) -> WakeupSource:
        try:
            return self._open_wakeups()
        except OSError as exc:
            log.warning("netwatch_backend_unavailable backend=%s error=%r; polling", self.backend, exc)
            self.backend = "poll"
            return self._open_poll()

    def _open_poll(self) -> WakeupSource:
        return PollWakeups(self._poll_interval)

    def _take_snapshot(self) -> InterfaceSnapshot | None:
        """Refresh ``current``; on ``OSError`` keep the old one and return None."""
        try:
            self.current = self._snapshot()
        except OSError as exc:
            log.warning("interface_snapshot_failed error=%r", exc)
            return None
        return self.current


def _summary(snapshot: InterfaceSnapshot | None) -> str:
    return snapshot.summary() if snapshot is not None else "snapshot=unavailable"

