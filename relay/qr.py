"""The QR code ``hermes-pair`` draws: the largest invite that fits the terminal, or none.

segno draws a symbol with its quiet zone (4 modules each side) in half-block characters
(``compact=True``: one character per module across, two modules per line down), so a symbol of
version v is ``4v + 17 + 8`` columns wide: 77 columns for version 13, which holds 331 bytes at error
level M (a signed invite with one route and its pin); the 795-byte invite of a TLS relay with
several routes is 101 columns. ``pick`` takes the first candidate whose drawing fits the terminal,
so the caller offers the whole invite first and the compact one next, and says so when none fits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

DEFAULT_COLUMNS = 80  # without a terminal to measure (and the width the JSON's qr_payload is chosen for)
ERROR_LEVEL = "m"  # 15% of the symbol may be unreadable (a glare on a screen) and it still scans


def terminal_columns(out: TextIO, env: Mapping[str, str] | None = None) -> int:
    """The width the drawing must fit: ``$COLUMNS`` when set (as the shells and shutil read it), else
    the terminal ``out`` writes to, else 80."""
    environ = os.environ if env is None else env
    try:
        columns = int(environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(out.fileno()).columns or DEFAULT_COLUMNS
    except (AttributeError, ValueError, OSError):
        return DEFAULT_COLUMNS


def make(text: str) -> Any:
    import segno  # only when a QR is drawn or measured

    return segno.make(text, error=ERROR_LEVEL, micro=False)


def width(symbol: Any) -> int:
    """Columns the drawing takes, quiet zone included (one column per module)."""
    return int(symbol.symbol_size()[0])


def pick(candidates: Sequence[str], columns: int) -> tuple[str, Any] | None:
    """The first candidate (and its symbol) whose drawing fits in ``columns``; None when none does."""
    for text in candidates:
        symbol = make(text)
        if width(symbol) <= columns:
            return text, symbol
    return None


def fits(text: str, columns: int = DEFAULT_COLUMNS) -> bool:
    return width(make(text)) <= columns


def draw(symbol: Any, out: TextIO) -> None:
    """The symbol in half blocks, quiet zone included: ``width(symbol)`` columns, no line longer."""
    symbol.terminal(out=out, compact=True)
