"""Per-IP failure rate limiting for the relay (sans-IO; the clock is passed in).

Two independent buckets, as in the reference relay: failed pairing codes and failed session tokens.
``limit`` failures inside ``window`` seconds block the address for ``block`` seconds; a blocked address
gets HTTP 429 on the WebSocket upgrade. Successful authentication clears that address's failures.
Memory stays bounded: stale entries are pruned whenever the table grows past ``MAX_TRACKED``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_TRACKED = 10_000  # addresses remembered at once; beyond that the oldest idle ones are dropped


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class RateLimiter:
    def __init__(self, *, limit: int, window: float, block: float):
        self.limit = limit
        self.window = window
        self.block = block
        self._entries: dict[str, _Entry] = {}

    def blocked_for(self, ip: str, now: float) -> float:
        """Seconds left on this address's block, 0 when it may try."""
        entry = self._entries.get(ip)
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - now)

    def record_failure(self, ip: str, now: float) -> bool:
        """Count one failure. Returns True when this failure started a block."""
        entry = self._entries.get(ip)
        if entry is None:
            if len(self._entries) >= MAX_TRACKED:
                self.prune(now)
            entry = self._entries[ip] = _Entry()
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        entry.failures.append(now)
        if len(entry.failures) >= self.limit and entry.blocked_until <= now:
            entry.blocked_until = now + self.block
            entry.failures.clear()
            return True
        return False

    def record_success(self, ip: str) -> None:
        entry = self._entries.get(ip)
        if entry is not None and not entry.blocked_until:
            del self._entries[ip]
        elif entry is not None:
            entry.failures.clear()

    def prune(self, now: float) -> None:
        for ip in [ip for ip, e in self._entries.items() if e.blocked_until <= now and (not e.failures or e.failures[-1] <= now - self.window)]:
            del self._entries[ip]
        if len(self._entries) >= MAX_TRACKED:
            oldest = sorted(self._entries, key=lambda ip: self._entries[ip].blocked_until)
            for ip in oldest[: len(self._entries) - MAX_TRACKED + 1]:
                del self._entries[ip]

    def __len__(self) -> int:
        return len(self._entries)
