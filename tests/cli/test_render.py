"""render.py is pure: golden strings for times, tables, redaction, colour policy and indicators."""

from __future__ import annotations

import io

import pytest

from hermes_relay.cli import render

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, None),
        (NOW, NOW),
        (int(NOW), NOW),
        (NOW * 1000, NOW),  # JavaScript Date.now()
        ("1800000000", NOW),
        ("1800000000000", NOW),
        ("2027-01-15T08:00:00Z", NOW),
        ("2027-01-15T08:00:00.000Z", NOW),
        ("2027-01-15T09:00:00+01:00", NOW),
        ("2027-01-15T08:00:00", NOW),  # naive: UTC
        ("", None),
        ("yesterday", None),
        (float("nan"), None),
        ([1], None),
    ],
)
def test_to_epoch_reads_seconds_milliseconds_and_iso(value, expected) -> None:
    assert render.to_epoch(value) == expected


@pytest.mark.parametrize(
    ("then", "expected"),
    [
        (NOW - 180, "3m ago"),
        (NOW - 59, "59s ago"),
        (NOW - 0.5, "just now"),
        (NOW + 600, "just now"),  # a clock ahead of ours never reads as a negative age
        (NOW - 3 * 86400 - 7000, "3d ago"),
        ("2027-01-15T05:00:00Z", "3h ago"),
        (None, "—"),
        ("garbage", "—"),
    ],
)
def test_ago(then, expected) -> None:
    assert render.ago(then, NOW) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (NOW + 9 * 60 + 59, "in 10m"),
        (NOW + 40, "in 40s"),
        (NOW + 5 * 3600, "in 5h"),
        (NOW + 29 * 86400 + 1, "in 29d"),
        (NOW, "expired"),
        (NOW - 3600, "expired"),
        (None, "never"),
        ((NOW + 120) * 1000, "in 2m"),
        ("not a time", "unknown"),
    ],
)
def test_expiry(when, expected) -> None:
    assert render.expiry(when, NOW) == expected


def test_countdown_and_uptime_are_never_negative() -> None:
    assert render.countdown(NOW + 9.4, NOW) == "in 9s"
    assert render.countdown(NOW + 0.5, NOW) == "now"
    assert render.countdown(NOW - 30, NOW) == "now"
    assert render.countdown(None, NOW) == "—"
    assert render.uptime(NOW - 3 * 3600 - 5, NOW) == "3h"
    assert render.uptime(NOW + 10, NOW) == "0s"


def test_grants_text_sorts_channels_and_says_never() -> None:
    grants = {"terminal": NOW + 29 * 86400, "bridge": NOW + 6 * 86400, "chat": None}
    assert render.grants_text(grants, NOW) == "bridge (in 6d), chat (never), terminal (in 29d)"
    assert render.grants_text({}, NOW) == "—"


def test_table_aligns_columns_without_trailing_spaces() -> None:
    lines = render.table(["PREFIX", "DEVICE", "EXPIRES"],
                         [["abcd1234", "laptop (this device)", "in 29d"], ["ef56", "phone", "never"]])
    assert lines == [
        "  PREFIX    DEVICE                EXPIRES",
        "  abcd1234  laptop (this device)  in 29d",
        "  ef56      phone                 never",
    ]


def test_table_counts_wide_characters_as_two_columns() -> None:
    lines = render.table(["A", "B"], [["電話", "x"], ["ab", "y"]])
    assert lines == ["  A     B", "  電話  x", "  ab    y"]


def test_table_header_is_dim_only_with_colour() -> None:
    assert render.table(["A", "B"], [["1", "2"]], style=render.Style(True))[0] == "  \x1b[2mA\x1b[0m  \x1b[2mB\x1b[0m"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "expected"),
    [
        (_Tty(), {}, True),
        (_Tty(), {"NO_COLOR": "1"}, False),
        (_Tty(), {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value disables colour
        (_Tty(), {"TERM": "dumb"}, False),
        (io.StringIO(), {}, False),
    ],
)
def test_colour_only_on_a_terminal_without_no_color(stream, env, expected) -> None:
    assert render.colour_enabled(stream, env) is expected


def test_style_is_a_no_op_without_colour() -> None:
    assert render.Style(False).ok("✓") == "✓"
    assert render.Style(True).ok("✓") == "\x1b[32m✓\x1b[0m"


def test_redaction_and_paths() -> None:
    assert render.token_text("secret-token", reveal=False) == "secret-t… (redacted)"  # the prefix `devices` lists
    assert render.token_text("secret-token", reveal=True) == "secret-token"
    assert render.token_text(None, reveal=True) == "—"
    assert render.token_prefix("abcd1234efgh") == "abcd1234"
    assert render.tilde("/home/u/.hermes/remote-sessions.json", "/home/u") == "~/.hermes/remote-sessions.json"
    assert render.tilde("/home/user2/x", "/home/u") == "/home/user2/x"
    assert render.tilde("/srv/x", None) == "/srv/x"
    assert render.printable("[200~F3W7EY[201~\x1b") == "[200~F3W7EY[201~\\x1b"


@pytest.mark.parametrize(
    ("indicator", "expected"),
    [
        (None, "offline (agent not running)"),
        ({"label": "LAN", "state": "connected", "url": "ws://10.0.0.2:8767", "since": NOW - 60,
          "valid_until": NOW + 30}, "LAN (ws://10.0.0.2:8767, since 1m ago)"),
        ({"label": "LAN", "state": "connected", "url": "ws://10.0.0.2:8767", "valid_until": NOW - 1},
         "LAN (stale: agent not updating)"),
        ({"label": "offline", "state": "rate_limited", "url": None, "valid_until": NOW + 30}, "offline (rate limited)"),
        ({"label": "offline", "state": "connecting", "valid_until": None}, "offline (stale: agent not updating)"),
        ({"label": "Tailscale\x1b[2J", "state": "connected", "valid_until": NOW + 1}, "Tailscale\\x1b[2J"),
    ],
)
def test_route_text(indicator, expected) -> None:
    assert render.route_text(indicator, NOW) == expected


def test_grants_that_end_together_are_listed_together() -> None:
    # Five channels of one pairing made a 170-character line.
    grants = {c: NOW + 30 * 86400 for c in ("terminal", "bridge", "chat", "tui", "desktop")} | {"voice": None}
    assert render.grants_text(grants, NOW) == "bridge, chat, desktop, terminal, tui (in 30d); voice (never)"


def test_one_call_is_not_calls() -> None:
    line = render.desktop_status_lines({"policy_label": "trusted", "tools_advertised": 3, "calls_today": 1}, NOW)[0]
    assert line == "trusted · 3 tools · 1 call today"
