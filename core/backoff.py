"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog, "Exponential
Backoff And Jitter"; tailscale util/backoff). Randomness comes from an injected ``random.Random`` so
schedules are reproducible in tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

DEFAULT_BASE = 1.0  # first retry within a second: most drops are a relay restart or a Wi-Fi hop
DEFAULT_CAP = 30.0  # the reference client's documented cap


def full_jitter(*, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP, rng: random.Random | None = None) -> Iterator[float]:
    """Yield delays ``uniform(0, min(cap, base * 2**n))`` forever."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, ceiling(attempt, base=base, cap=cap))
        attempt += 1


def ceiling(attempt: int, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP) -> float:
    """The upper bound of the ``attempt``-th delay (0-based), for display and tests."""
    return min(cap, base * (2.0 ** min(attempt, 32)))
