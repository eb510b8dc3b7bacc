"""Human time strings: one unit, rounded to the nearest as people read them, never negative."""

from __future__ import annotations

import pytest

from hermes_relay.core import timefmt

NOW = 1_767_225_600.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (0.9, "1s"),
        (-5, "0s"),
        (-86400, "0s"),
        (42, "42s"),
        (59.4, "59s"),
        (59.99, "1m"),
        (60, "1m"),
        (89, "1m"),
        (90, "2m"),
        (599, "10m"),
        (3599, "1h"),
        (3600, "1h"),
        (5 * 3600 + 1799, "5h"),
        (5 * 3600 + 1800, "6h"),
        (23 * 3600 + 1799, "23h"),
        (86400 - 1, "1d"),  # a 1-day extend looked at a second later
        (86400, "1d"),
        (7 * 86400 - 1, "7d"),  # `--ttl 7d` looked at a second later
        (29 * 86400 + 86399, "30d"),
    ],
)
def test_short_duration_rounds_to_the_nearest_unit(seconds: float, text: str) -> None:
    assert timefmt.short_duration(seconds) == text


@pytest.mark.parametrize(
    ("then", "text"),
    [
        (NOW - 180, "3m ago"),
        (NOW - 209, "3m ago"),
        (NOW - 239, "4m ago"),
        (NOW - 1, "1s ago"),
        (NOW - 0.5, "just now"),
        (NOW, "just now"),
        (NOW + 600, "just now"),  # a clock that jumped back never gives "-10m ago"
        (NOW - 2 * 86400, "2d ago"),
        (None, "—"),
    ],
)
def test_age(then: float | None, text: str) -> None:
    assert timefmt.age(then, NOW) == text


@pytest.mark.parametrize(
    ("expires_at", "text"),
    [
        (NOW + 9 * 60, "in 9m"),
        (NOW + 9 * 60 + 29, "in 9m"),
        (NOW + 9 * 60 + 59, "in 10m"),
        (NOW + 7 * 86400 - 1, "in 7d"),
        (NOW + 30 * 86400, "in 30d"),
        (NOW, "expired"),
        (NOW - 3600, "expired"),
        (None, "never"),
    ],
)
def test_expiry(expires_at: float | None, text: str) -> None:
    assert timefmt.expiry(expires_at, NOW) == text


@pytest.mark.parametrize("offset", [-10**9, -86401, -61, -1.5, -0.1, 0, 0.1, 1.5, 61, 86401, 10**9])
def test_never_negative(offset: float) -> None:
    for text in (timefmt.age(NOW + offset, NOW), timefmt.expiry(NOW + offset, NOW), timefmt.short_duration(offset)):
        assert "-" not in text


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "never expires"),
        (-1, "never expires"),
        (2592000, "30 days"),
        (86400, "1 day"),
        (43200, "12 hours"),
        (31536000, "1 year"),
        (600, "10 minutes"),
        (60, "1 minute"),
        (90, "90 seconds"),
    ],
)
def test_ttl_words(seconds: int, words: str) -> None:
    assert timefmt.ttl_words(seconds) == words
