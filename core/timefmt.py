"""Human time strings: one unit, rounded to the nearest the way people read them (``in 7d``, ``3m ago``).

A session created with ``--ttl 7d`` and looked at a second later has 6d 23h 59m 59s left: that reads
"in 7d", not "in 6d". Each value is rounded in the smallest unit first and promoted while the rounded
count reaches the next unit (59.6 s is "1m", 23.99 h is "1d").
"""

from __future__ import annotations

import math

_UNITS = ((1, "s", 60), (60, "m", 60), (3600, "h", 24), (86400, "d", None))


def short_duration(seconds: float) -> str:
    """``42s``, ``9m``, ``5h``, ``29d``: one unit, rounded to the nearest; negatives read as 0s."""
    s = max(0.0, float(seconds))
    for size, unit, next_at in _UNITS:
        count = math.floor(s / size + 0.5)
        if next_at is None or count < next_at:
            return f"{count}{unit}"
    raise AssertionError("unreachable")


def expiry(expires_at: float | None, now: float) -> str:
    """``never`` for None, ``expired`` when past, else ``in <duration>``."""
    if expires_at is None:
        return "never"
    left = float(expires_at) - now
    if left <= 0:
        return "expired"
    return f"in {short_duration(left)}"


def age(then: float | None, now: float) -> str:
    """``3m ago``; ``just now`` under a second; ``—`` when unknown. A future time reads ``just now``."""
    if then is None:
        return "—"
    delta = now - float(then)
    if delta < 1:
        return "just now"
    return f"{short_duration(delta)} ago"


def ttl_words(seconds: int) -> str:
    """``30 days``, ``1 day``, ``12 hours``, ``600 seconds`` or ``never expires`` (for 0)."""
    if seconds <= 0:
        return "never expires"
    for size, word in ((31536000, "year"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {word}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_ttl(raw: str | int, *, flag: str = "--ttl") -> int:
    """Seconds from ``2592000``, ``30d``, ``12h``, ``1y`` or ``never`` (0 = never expires).

    Raises UsageError naming the flag and the accepted forms.
    """
    from .errors import UsageError

    text = str(raw).strip().lower()
    if text in ("never", "0"):
        return 0
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _TTL_UNITS else (text, "s")
    if not number.isdigit():
        raise UsageError(
            f'{flag} must be a non-negative number of seconds or a duration like 30d, 12h, 1y or never (got "{raw}")'
        )
    return int(number) * _TTL_UNITS[unit]
