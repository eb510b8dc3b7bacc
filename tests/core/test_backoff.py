"""Reconnect delays: full jitter inside [0, min(cap, base * 2**n)], reproducible with a seeded Random."""

from __future__ import annotations

import itertools
import random

import pytest

from hermes_relay.core import backoff


def _take(n: int, **kw: object) -> list[float]:
    return list(itertools.islice(backoff.full_jitter(**kw), n))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (6, 30.0), (1000, 30.0)],
)
def test_ceiling_doubles_then_caps(attempt: int, ceiling: float) -> None:
    assert backoff.ceiling(attempt) == ceiling


def test_ceiling_with_custom_base_and_cap() -> None:
    assert [backoff.ceiling(n, base=0.5, cap=3.0) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_delays_stay_inside_their_ceiling() -> None:
    delays = _take(200, rng=random.Random(7))
    for n, delay in enumerate(delays):
        assert 0.0 <= delay <= backoff.ceiling(n)
    assert max(delays) <= backoff.DEFAULT_CAP == 30.0


def test_jitter_is_full_not_proportional() -> None:
    # Full jitter spreads over [0, cap]; a 0.5-1.5x scheme would never go below half the ceiling.
    delays = _take(400, rng=random.Random(11), base=1.0, cap=30.0)[10:]
    assert min(delays) < 3.0
    assert max(delays) > 27.0


def test_same_seed_same_schedule() -> None:
    first = _take(20, rng=random.Random(42))
    second = _take(20, rng=random.Random(42))
    other = _take(20, rng=random.Random(43))
    assert first == second
    assert first != other


def test_schedule_matches_uniform_draws_from_the_injected_rng() -> None:
    expected_rng = random.Random(5)
    expected = [expected_rng.uniform(0, c) for c in (2.0, 4.0, 8.0, 10.0, 10.0)]
    assert _take(5, rng=random.Random(5), base=2.0, cap=10.0) == expected


def test_huge_attempt_counts_do_not_overflow() -> None:
    gen = backoff.full_jitter(rng=random.Random(1), base=1.0, cap=30.0)
    for _ in range(2000):
        delay = next(gen)
    assert 0.0 <= delay <= 30.0
    assert backoff.ceiling(10**6) == 30.0


def test_without_an_rng_it_still_yields_bounded_delays() -> None:
    assert all(0.0 <= d <= backoff.ceiling(n) for n, d in enumerate(_take(10)))
