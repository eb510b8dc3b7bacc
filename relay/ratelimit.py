"""Per-IP failure rate limiting for the relay (sans-IO; the clock is passed in).

Two independent buckets, as in the reference relay: failed pairing codes and failed session tokens.
``limit`` failures inside ``window`` seconds block the address for ``block`` seconds; a blocked address
gets HTTP 429 on the WebSocket upgrade (and ``auth.fail`` on a connection opened before the block).
Successful authentication clears that address's failures.

Memory stays bounded without letting anyone reset their count by flooding the table: past ``max_tracked``
addresses only idle entries (no failure inside the window, no block in force) are dropped. When every entry
still matters the limiter fails closed: an address it is not tracking is refused (``blocked_for`` > 0) until
room frees up, rather than let in untracked. ``GlobalCap`` bounds failed pairing-code attempts over all
addresses per minute, so guessing a code stays infeasible from any number of addresses.

Addresses are bucketed by ``rate_key``: an IPv4 address (or an IPv4-mapped IPv6 one) counts alone, but
an IPv6 address counts as its whole /64, the smallest block a single host or LAN is usually given, so
rotating through addresses inside one's own /64 does not reset the count.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

MAX_TRACKED = 10_000  # addresses remembered at once; beyond that idle ones are dropped, then new ones refused
IPV6_BUCKET_PREFIX = 64


@lru_cache(maxsize=4096)  # a handshake asks ~9 times (caps, limiter, core): the address is parsed once
def rate_key(ip: str) -> str:
    """The bucket an address counts in: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # "unknown" and the like: a bucket of their own
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        host_bits = 128 - IPV6_BUCKET_PREFIX
        network = ipaddress.IPv6Address(int(addr) >> host_bits << host_bits)  # drops any %scope too
        return f"{network}/{IPV6_BUCKET_PREFIX}"
    return str(addr)


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class RateLimiter:
    def __init__(self, *, limit: int, window: float, block: float, max_tracked: int = MAX_TRACKED):
        self.limit = limit
        self.window = window
        self.block = block
        self.max_tracked = max_tracked
        self._entries: dict[str, _Entry] = {}
        self._full_until = 0.0  # while full of entries that matter, untracked addresses are refused

    def blocked_for(self, ip: str, now: float) -> float:
        """Seconds left on this address's block, 0 when it may try."""
        entry = self._entries.get(rate_key(ip))
        if entry is None:
            if self._full_until > now and len(self._entries) >= self.max_tracked:
                self.prune(now)
                if len(self._entries) >= self.max_tracked:
                    return self._full_until - now
            return 0.0
        return max(0.0, entry.blocked_until - now)

    def record_failure(self, ip: str, now: float) -> bool:
        """Count one failure. Returns True when this failure started a block (or the table is full)."""
        key = rate_key(ip)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_tracked:
                self.prune(now)
            if len(self._entries) >= self.max_tracked:
                self._full_until = now + self.window  # fail closed: no room to count this address
                return True
            entry = self._entries[key] = _Entry()
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        entry.failures.append(now)
        if len(entry.failures) >= self.limit and entry.blocked_until <= now:
            entry.blocked_until = now + self.block
            entry.failures.clear()
            return True
        return False

    def record_success(self, ip: str) -> None:
        key = rate_key(ip)
        entry = self._entries.get(key)
        if entry is not None and not entry.blocked_until:
            del self._entries[key]
        elif entry is not None:
            entry.failures.clear()

    def clear(self) -> None:
        """Forget every address's failures and blocks (the operator just minted a fresh pairing code)."""
        self._entries.clear()
        self._full_until = 0.0

    def prune(self, now: float) -> None:
        """Drop idle entries only: no failure inside the window and no block in force."""
        idle = [ip for ip, e in self._entries.items()
                if e.blocked_until <= now and (not e.failures or e.failures[-1] <= now - self.window)]
        for ip in idle:
            del self._entries[ip]

    def __len__(self) -> int:
        return len(self._entries)


class GlobalCap:
    """At most ``limit`` failures in any ``window`` seconds, over all addresses together."""

    def __init__(self, *, limit: int, window: float):
        self.limit = limit
        self.window = window
        self._failures: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self.window:
            self._failures.popleft()

    def exceeded(self, now: float) -> float:
        """Seconds until another attempt may be tried, 0 when under the cap."""
        self._trim(now)
        if len(self._failures) < self.limit:
            return 0.0
        return self._failures[0] + self.window - now

    def record_failure(self, now: float) -> None:
        self._trim(now)
        self._failures.append(now)
