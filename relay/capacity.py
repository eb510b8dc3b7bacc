"""Connection budgets: how many connections each unauthenticated phase may hold, so authenticated clients
always find a file descriptor.

A connection is counted from accept until its request head has arrived (``Gate``: per address and in
all), then, if it upgrades, as unauthenticated until it authenticates (relay/server.py). Both phases are
capped at a quarter of the process's file-descriptor limit each, which leaves half of it to
authenticated clients, listeners and files. At start the relay raises its soft descriptor limit to the
hard one (``raise_fd_limit``), so the default 1,024 rarely applies.
"""

from __future__ import annotations

import sys

MAX_PENDING = 512  # connections whose request head has not arrived yet, over all addresses
MAX_PENDING_PER_IP = 16  # the same per address (IPv6: per /64); trusted proxies count only in the total
FALLBACK_NOFILE_CAP = 65536  # soft limit chosen when the hard limit is "unlimited"


class Gate:
    """Counts connections in one phase, at most ``total`` in all and ``per_key`` per address key."""

    def __init__(self, total: int, per_key: int):
        self.total = total
        self.per_key = per_key
        self.count = 0
        self.by_key: dict[str, int] = {}

    def enter(self, key: str, *, per_key: bool = True) -> bool:
        if self.count >= self.total or (per_key and self.by_key.get(key, 0) >= self.per_key):
            return False
        self.count += 1
        self.by_key[key] = self.by_key.get(key, 0) + 1
        return True

    def leave(self, key: str) -> None:
        self.count -= 1
        left = self.by_key.get(key, 0) - 1
        if left > 0:
            self.by_key[key] = left
        else:
            self.by_key.pop(key, None)


def fd_limit() -> int | None:
    """The soft RLIMIT_NOFILE, or None where there is no such limit (Windows)."""
    if sys.platform == "win32":  # pragma: no cover - no such limit
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def raise_fd_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    if sys.platform == "win32":  # pragma: no cover
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FALLBACK_NOFILE_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # e.g. macOS refuses values above kern.maxfilesperproc: keep what we have
    return fd_limit()


def phase_cap(configured: int, nofile: int | None) -> int:
    """``configured``, but never more than a quarter of the descriptor limit (that bound is at least 8)."""
    if nofile is None:
        return configured
    return min(configured, max(8, nofile // 4))
