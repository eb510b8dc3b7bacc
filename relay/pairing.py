"""Relay-side pairing codes and the duration rules shared by sessions (sans-IO: the clock is injected).

- Pairing codes: 6 characters A-Z0-9, single use, valid for ``CODE_TTL`` seconds. A code carries the
  session TTL, grants and transport hint the minting side asked for. A code taken by a pairing whose
  session could not be saved is put back (``restore``), so a full disk does not spend it.
- Durations (session TTLs and grants) are whole seconds from 0 to ``MAX_DURATION`` (10 years), so an
  absurd value gets a 400 instead of overflowing a float later.
- Default grants follow the reference relay: chat and voice last as long as the session, terminal and
  tui at most 30 days, bridge at most 7 days; a never-expiring session (TTL 0) gets never-expiring grants.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.codes import generate_code, is_valid_code
from ..core.errors import UsageError

CODE_TTL = 600.0  # seconds; the reference relay's pairing code validity (10 minutes)
MAX_PENDING_CODES = 1000  # bound memory if a local script registers codes in a loop
DEFAULT_SESSION_TTL = 30 * 86400  # hermes-pair's default session lifetime (30 days)
DEFAULT_CHANNELS = ("chat", "terminal", "bridge", "tui", "voice:config", "voice:stt", "voice:tts", "voice:realtime")
# Per-channel caps the reference relay applies to default grants (seconds); others follow the session.
DEFAULT_GRANT_CAPS = {"terminal": 30 * 86400, "tui": 30 * 86400, "bridge": 7 * 86400}
TRANSPORT_HINTS = ("ws", "wss", "unknown")  # what the reference relay accepts; stored as given
GRANT_OFF = -1  # a requested grant of "off" (hermes-pair --grant terminal=off): the channel is not granted
MAX_DURATION = 10 * 365 * 86400  # 315360000 s: the longest session TTL or grant accepted (10 years)

Clock = Callable[[], float]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class PendingCode:
    code: str
    created_at: float
    expires_at: float
    ttl_seconds: int
    grants: dict[str, int] | None
    transport_hint: str | None


def compute_grants(
    requested: dict[str, int] | None, now: float, expires_at: float | None, *, withheld: tuple[str, ...] = ()
) -> dict[str, float | None]:
    """Grant expiries per channel: requested durations, else defaults with caps; never past the session.

    ``withheld`` channels get no default grant (a relay with --terminal withholds ``terminal``: a shell on
    the relay host is a loopback user there); a requested ``GRANT_OFF`` removes a channel.
    """
    out: dict[str, float | None] = {}
    for channel in DEFAULT_CHANNELS:
        if channel in withheld:
            continue
        cap = DEFAULT_GRANT_CAPS.get(channel)
        out[channel] = None if cap is None or expires_at is None else now + cap
    for channel, seconds in (requested or {}).items():
        if seconds == GRANT_OFF:
            out.pop(channel, None)
            continue
        out[channel] = None if seconds == 0 else now + seconds
    if expires_at is not None:
        out = {ch: (expires_at if exp is None or exp > expires_at else exp) for ch, exp in out.items()}
    return out


def validate_seconds(value: Any, what: str) -> int:
    """A duration in whole seconds (an int, or a float with no fraction such as 86400.0), at most
    MAX_DURATION: longer ones are clamped, not refused, because the reference relay accepts any
    non-negative number (its hermes-pair sends e.g. 20 years) and clamping keeps the arithmetic sane."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError(f"{what} must be a whole, non-negative number of seconds; 0 = never expire")
    return min(value, MAX_DURATION)


def validate_grants(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UsageError("grants must be an object of channel -> seconds")
    out = {}
    for ch, secs in raw.items():
        if not isinstance(ch, str) or not ch or len(ch) > 64:
            raise UsageError(f"invalid grant channel {ch!r}")
        out[ch] = GRANT_OFF if secs == "off" else validate_seconds(secs, f"grant for {ch} (or \"off\")")
    return out


class PairingCodes:
    """Pending single-use pairing codes."""

    def __init__(self, clock: Clock = time.time, code_ttl: float = CODE_TTL):
        self.clock = clock
        self.code_ttl = code_ttl
        self._codes: dict[str, PendingCode] = {}

    def register(
        self,
        code: str | None,
        *,
        ttl_seconds: int = DEFAULT_SESSION_TTL,
        grants: dict[str, int] | None = None,
        transport_hint: str | None = None,
    ) -> PendingCode:
        now = self.clock()
        self._prune(now)
        if code is None:
            code = generate_code()
            while code in self._codes:
                code = generate_code()
        code = code.upper() if isinstance(code, str) else code
        if not isinstance(code, str) or not is_valid_code(code):
            raise UsageError("pairing code must be exactly 6 characters from A-Z and 0-9")
        ttl_seconds = validate_seconds(ttl_seconds, "ttl_seconds")
        if transport_hint is not None and transport_hint not in TRANSPORT_HINTS:
            raise UsageError("transport_hint must be 'ws', 'wss' or 'unknown'")
        if len(self._codes) >= MAX_PENDING_CODES and code not in self._codes:
            raise UsageError(f"too many pending pairing codes (limit {MAX_PENDING_CODES}); wait for some to expire")
        pending = PendingCode(code, now, now + self.code_ttl, ttl_seconds, grants, transport_hint)
        self._codes[code] = pending
        return pending

    def consume(self, code: str) -> PendingCode | None:
        """Take a code if valid and unexpired; a code is usable exactly once."""
        now = self.clock()
        pending = self._codes.get(code.upper()) if isinstance(code, str) else None
        if pending is None:
            return None
        del self._codes[pending.code]
        if pending.expires_at <= now:
            return None
        return pending

    def restore(self, pending: PendingCode) -> None:
        """Put back a code taken by a pairing that could not be completed (its session was not saved)."""
        self._codes.setdefault(pending.code, pending)

    def _prune(self, now: float) -> None:
        for code in [c for c, p in self._codes.items() if p.expires_at <= now]:
            del self._codes[code]

    def __len__(self) -> int:
        self._prune(self.clock())
        return len(self._codes)
