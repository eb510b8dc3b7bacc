"""Human time strings: one unit, rounded down, never negative (``in 9m``, ``3m ago``)."""

from __future__ import annotations

_UNITS = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))


def short_duration(seconds: float) -> str:
    """``42s``, ``9m``, ``5h``, ``29d``: the largest whole unit, rounded down; negatives read as 0s."""
    s = max(0, int(seconds))
    for size, unit in _UNITS:
        if s >= size:
            return f"{s // size}{unit}"
    return "0s"


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
    from hermes_relay.core.errors import UsageError

    text = str(raw).strip().lower()
    if text in ("never", "0"):
        return 0
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _TTL_UNITS else (text, "s")
    if not number.isdigit():
        raise UsageError(
            f'{flag} must be a non-negative number of seconds or a duration like 30d, 12h, 1y or never (got "{raw}")'
        )
    return int(number) * _TTL_UNITS[unit]
