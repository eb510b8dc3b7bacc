"""Polling wakeups: "look again" every ``interval`` seconds.

The fallback wherever no change notification is available (Windows, or a Linux without an openable
NETLINK_ROUTE socket). It holds no OS resource, so ``close()`` does nothing.

Windows polls on purpose, for now: its notifiers (``NotifyIpInterfaceChange``, ``NotifyAddrChange``)
call back on a thread of the system's or need an overlapped handle wired into trio's IOCP through
ctypes, untestable here; a look is one GetAdaptersAddresses call (netifaces), so a 10 s poll costs
little, and a network change is noticed within 10 s plus the debounce. The watcher's ``poke()``
(the sleep/wake detector) still gives an immediate look after a resume.
"""

from __future__ import annotations

from typing import Final

import trio

DEFAULT_POLL_INTERVAL: Final = 10.0  # house style B3 e): poll every 10 s where the OS cannot tell us


class PollWakeups:
    """A wakeup source that fires every ``interval`` seconds of trio time."""

    def __init__(self, interval: float = DEFAULT_POLL_INTERVAL):
        if interval <= 0:
            raise ValueError(f"poll interval must be positive, got {interval!r}")
        self.interval = interval

    async def wait(self) -> str:
        """Sleep one interval.

        Returns:
            ``"poll"``, the wakeup reason for logs.
        """
        await trio.sleep(self.interval)
        return "poll"

    def close(self) -> None:
        pass
