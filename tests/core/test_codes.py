"""Pairing codes: cleaning pasted text (ANSI, bracketed paste, separators) and validation messages."""

from __future__ import annotations

import pytest

from hermes_relay.core import codes
from hermes_relay.core.errors import PayloadError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("F3W7EY", "F3W7EY"),
        ("f3w7ey", "F3W7EY"),
        ("  f3w-7ey \n", "F3W7EY"),
        ("F3W 7EY", "F3W7EY"),
        pytest.param("\x1b[200~F3W7EY\x1b[201~", "F3W7EY", id="bracketed-paste"),
        pytest.param("\x1b[200~f3w7ey\n\x1b[201~", "F3W7EY", id="bracketed-paste-lower-newline"),
        pytest.param("\x1b[1;32mF3W7EY\x1b[0m", "F3W7EY", id="sgr-colour"),
        pytest.param("\x1b]0;title 42\x07F3W7EY", "F3W7EY", id="osc-bel"),
        pytest.param("\x1b]8;;http://x/9\x1b\\F3W7EY\x1b]8;;\x1b\\", "F3W7EY", id="osc-hyperlink-st"),
        pytest.param("\x1b[?2004hF3W7EY", "F3W7EY", id="private-mode"),
        pytest.param("\x1bMF3W7EY", "F3W7EY", id="two-byte-escape"),
        ("Code: F3W7EY", "CODEF3W7EY"),  # not cut or guessed: validation reports the length
        ("", ""),
        (None, ""),
    ],
)
def test_clean_code(raw: str, clean: str) -> None:
    assert codes.clean_code(raw) == clean


def test_bracketed_paste_markers_leak_no_digits() -> None:
    # Without stripping, "200~" and "201~" would add 2,0,0,2,0,1 to the code.
    assert codes.validate_code("\x1b[200~ab12cd\x1b[201~") == "AB12CD"


@pytest.mark.parametrize("raw", ["F3W7EY", "f3w7ey", "\x1b[200~f3w7ey\x1b[201~", "f3w 7ey"])
def test_validate_code_accepts_and_returns_the_clean_code(raw: str) -> None:
    assert codes.validate_code(raw) == "F3W7EY"


@pytest.mark.parametrize(
    ("raw", "count"),
    [("F3W7E", 5), ("F3W7EYZ", 7), ("", 0), ("!!!!!!", 0), ("\x1b[200~ab1\x1b[201~", 3)],
)
def test_validate_code_error_names_the_problem(raw: str, count: int) -> None:
    with pytest.raises(PayloadError) as info:
        codes.validate_code(raw)
    assert info.value.message == (
        f'invalid code format: need 6 characters of A-Z or 0-9, got "{raw}" ({count} valid characters)'
    )
    assert info.value.hint == "run `hermes-pair` on the relay host and copy the Code it prints"
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("code", "ok"), [("F3W7EY", True), ("f3w7ey", False), ("F3W7E", False), ("F3W7EY\n", False), ("", False)])
def test_is_valid_code_is_exact(code: str, ok: bool) -> None:
    assert codes.is_valid_code(code) is ok


def test_generated_codes_are_valid_and_vary() -> None:
    generated = {codes.generate_code() for _ in range(50)}
    assert all(codes.is_valid_code(c) for c in generated)
    assert len(generated) > 1


@pytest.mark.parametrize("raw", ["k", "kd2", " kd2 "])
def test_a_token_prefix_too_short_to_name_one_device_is_refused(raw: str) -> None:
    from hermes_relay.core.codes import validate_token_prefix
    from hermes_relay.core.errors import UsageError

    with pytest.raises(UsageError, match="too short: give at least 4 characters"):
        validate_token_prefix(raw)
    assert validate_token_prefix(" kd21 ") == "kd21"
