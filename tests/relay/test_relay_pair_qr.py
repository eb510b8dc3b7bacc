"""``hermes-pair``'s QR fits the terminal: measured from the symbol (quiet zone included), the whole invite
when it fits, else the compact one, else none with a word why, and the code and invite line either way."""

from __future__ import annotations

import io
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import trio

from hermes_relay.core import payload
from hermes_relay.relay import pair_cmd, qr

BLOCKS = "\u2588\u2580\u2584"
SEVERAL = ["--lan-host", "192.168.1.20", "--tailscale-host", "100.101.102.103",
           "--public-url", "https://relay.example.com"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def columns(line: str) -> int:
    """Display columns: wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


async def pair_on_terminal(monkeypatch: pytest.MonkeyPatch, home: Path, width: int, argv: list[str]) -> str:
    monkeypatch.setenv("HERMES_HOME", str(home))
    monkeypatch.setenv("COLUMNS", str(width))
    out, err = _Terminal(), io.StringIO()
    code = await trio.to_thread.run_sync(lambda: pair_cmd.main(argv, stdout=out, stderr=err))
    assert code == 0, err.getvalue()
    return out.getvalue()


def invite_line(text: str) -> str:
    (line,) = [line for line in text.splitlines() if "--pair-qr" in line]
    return line


def qr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and set(line) <= set(BLOCKS + " ")]


@pytest.mark.parametrize("kind", ["plain", "tls", "several routes"])
async def test_at_80_columns_the_qr_fits_without_wrapping(relay_factory: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    relay = await relay_factory(tls=kind == "tls")
    argv = ["--relay", relay.url] + (SEVERAL if kind == "several routes" else ["--mode", "lan", "--lan-host", "127.0.0.1"])
    text = await pair_on_terminal(monkeypatch, tmp_path, 80, argv)
    drawn = qr_lines(text)
    assert len(drawn) > 10, text  # a QR was drawn
    line = invite_line(text)
    too_wide = [row for row in text.splitlines() if columns(row) > 80 and row != line]
    assert too_wide == []  # the invite is one line to copy whole; nothing else would wrap
    assert {columns(row) for row in drawn} == {qr.width(qr.make(_held(text, tmp_path, kind)))}
    full = payload.decode(line.split("'")[1])
    assert payload.parse(payload.encode(full)).code == text.splitlines()[0].removeprefix("Code : ")
    assert ("The QR code has the first route" in text) == (kind != "plain")


def _held(text: str, home: Path, kind: str) -> str:
    """What the QR holds: the whole invite for a plain relay, else the compact one (first route and pin)."""
    full = payload.decode(invite_line(text).split("'")[1])
    if kind == "plain":
        return payload.encode(full)
    return payload.encode(payload.compact(full, (home / "hermes-relay-qr-secret").read_bytes()))


async def test_a_narrow_terminal_gets_no_qr_but_the_code_and_the_invite_line(relay_factory: Any, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    relay = await relay_factory(tls=True)
    text = await pair_on_terminal(monkeypatch, tmp_path, 40, ["--relay", relay.url] + SEVERAL)
    assert not any(ch in text for ch in BLOCKS)
    lines = text.splitlines()
    assert lines[0].startswith("Code : ")
    assert any(line.startswith("No QR code: it needs 7") and line.endswith("this terminal has 40.") for line in lines)
    assert "Pair with the code, or with the invite line below." in lines
    assert payload.parse(invite_line(text).split("'")[1]).code == lines[0].removeprefix("Code : ")
    assert "{" not in text  # raw JSON only with --json


def test_the_measured_width_is_the_drawn_width() -> None:
    for size in (50, 300, 331, 332, 800):
        symbol = qr.make("x" * size)
        out = io.StringIO()
        qr.draw(symbol, out)
        assert {len(row) for row in out.getvalue().splitlines()} == {qr.width(symbol)}
    assert qr.fits("x" * 331) and not qr.fits("x" * 332)  # version 13 at level M: 77 columns with its quiet zone


def test_columns_come_from_the_environment_then_the_terminal() -> None:
    assert qr.terminal_columns(io.StringIO(), {"COLUMNS": "57"}) == 57
    assert qr.terminal_columns(io.StringIO(), {}) == qr.DEFAULT_COLUMNS  # no terminal to measure
