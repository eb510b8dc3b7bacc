"""Pure formatting for the CLI: colour, human times, tables, redaction and the route indicator.

Nothing here reads files, the environment or the clock: callers pass ``now``, a ``Style`` and the
data. That keeps every user-visible string testable as a golden string (house style B6).

Times from other Hermes clients are not always epoch seconds: the reference TypeScript client stores
ISO-8601 strings or ``Date.now()`` milliseconds. ``to_epoch`` accepts all three, so ``status`` never
shows a pairing as made in the year 50000 or crashes on a string.
"""

from __future__ import annotations

from ..core import timefmt
from ..core.wire import TOKEN_PREFIX_LEN

TYPE_CHECKING = False  # collections.abc and typing cost `status` ~4 ms per start
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

REDACTED = "(redacted)"
TOKEN_PREFIX_CHARS = TOKEN_PREFIX_LEN
# A timestamp larger than this cannot be epoch seconds (it is past the year 5000), so it is read as
# epoch milliseconds: JavaScript's Date.now(), which the reference client writes.
MS_EPOCH_THRESHOLD = 1e11
OFFLINE_LABEL = "offline"
NONE_MARK = "—"

_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


# -- colour ----------------------------------------------------------------------------------------
def colour_enabled(stream: Any, env: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org) or TERM is dumb."""
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class Style:
    """SGR colouring that is a no-op when colour is off. (Not a dataclass: that import costs ~5 ms.)"""

    __slots__ = ("color",)

    def __init__(self, color: bool = False):
        self.color = color

    def __repr__(self) -> str:
        return f"Style(color={self.color})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Style) and other.color == self.color

    def __hash__(self) -> int:
        return hash(self.color)

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles or not text:
            return text
        codes = ";".join(_SGR[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def ok(self, text: str) -> str:
        return self.paint(text, "green")

    def warn(self, text: str) -> str:
        return self.paint(text, "yellow")

    def bad(self, text: str) -> str:
        return self.paint(text, "red")

    def dim(self, text: str) -> str:
        return self.paint(text, "dim")

    def bold(self, text: str) -> str:
        return self.paint(text, "bold")


_PLAIN = Style()


# -- time ------------------------------------------------------------------------------------------
def to_epoch(value: Any) -> float | None:
    """Epoch seconds from epoch seconds, epoch milliseconds, a numeric string or an ISO-8601 string.

    Returns None for None and for anything that cannot be read as a time.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            return None
        return number / 1000.0 if abs(number) > MS_EPOCH_THRESHOLD else number
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return to_epoch(float(text))
    except ValueError:
        pass
    from datetime import UTC, datetime

    if text[-1] in "Zz":  # Python 3.10's fromisoformat does not accept the UTC designator
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def ago(value: Any, now: float) -> str:
    """``3m ago``, ``just now`` (also for a time in the future), or ``—`` when unknown."""
    return timefmt.age(to_epoch(value), now)


def expiry(value: Any, now: float) -> str:
    """``in 9m``, ``expired`` or ``never`` (for None); ``unknown`` for a value that is not a time."""
    if value is None:
        return "never"
    when = to_epoch(value)
    if when is None:
        return "unknown"
    return timefmt.expiry(when, now)


def countdown(value: Any, now: float) -> str:
    """``in 9s``; ``now`` once the time has come (never a negative duration)."""
    when = to_epoch(value)
    if when is None:
        return NONE_MARK
    if when - now < 1:
        return "now"
    return f"in {timefmt.short_duration(when - now)}"


def uptime(started_at: Any, now: float) -> str:
    started = to_epoch(started_at)
    return NONE_MARK if started is None else timefmt.short_duration(now - started)


def grants_text(grants: Any, now: float) -> str:
    """``bridge (in 6d), chat (never)``, sorted by channel; ``—`` for none."""
    if not isinstance(grants, dict) or not grants:  # msgpack and json give dicts
        return NONE_MARK
    by_expiry: dict[str, list[str]] = {}  # channels that end together are listed together: one short line
    for channel in sorted(grants, key=str):
        by_expiry.setdefault(expiry(grants[channel], now), []).append(str(channel))
    sep = "; " if any(len(channels) > 1 for channels in by_expiry.values()) else ", "
    return sep.join(f"{', '.join(channels)} ({when})" for when, channels in by_expiry.items())


# -- tables ----------------------------------------------------------------------------------------
def display_width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide and fullwidth characters take two."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, style: Style = _PLAIN,
          indent: str = "  ", gap: str = "  ") -> list[str]:
    """Left-aligned columns under a dim header. The last column is not padded (no trailing spaces)."""
    ncols = len(headers)
    widths = [display_width(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:ncols]):
            widths[i] = max(widths[i], display_width(cell))

    def line(cells: Sequence[str], paint: Any = None) -> str:
        parts = []
        for i, cell in enumerate(cells):
            pad = "" if i == ncols - 1 else " " * (widths[i] - display_width(cell))
            parts.append((paint(cell) if paint else cell) + pad)
        return indent + gap.join(parts).rstrip()

    out = [line(list(headers), style.dim)]
    out.extend(line([str(c) for c in row]) for row in rows)
    return out


def terminal_width(stream: Any, env: Mapping[str, str]) -> int | None:
    """Columns to fit: ``$COLUMNS``, else the terminal's width; None for a pipe or file (never wrapped)."""
    try:
        columns = int(env.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        if not stream.isatty():
            return None
        import os

        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None


MIN_WRAP_WIDTH = 30  # narrower than this, wrapping makes things worse


def wrap_lines(lines: Sequence[str], width: int | None) -> list[str]:
    """Lines longer than ``width`` wrapped at spaces, continuing under their value (``  label:  value``).

    Coloured lines are left alone (escape codes would be counted as columns), and so are words longer
    than a line (a URL or a pin stays copyable).
    """
    if width is None or width < MIN_WRAP_WIDTH:
        return list(lines)
    out: list[str] = []
    for line in lines:
        if display_width(line) <= width or "\x1b" in line:
            out.append(line)
            continue
        import re
        import textwrap

        head = re.match(r"^(\s*(?:[\w ]+:|[•●○◌✗✓!-])\s+)", line) or re.match(r"^(\s*)", line)
        indent = " " * len(head.group(1)) if head else ""
        if len(indent) > width // 2:
            indent = " " * (len(line) - len(line.lstrip()) + 2)
        out.extend(textwrap.wrap(line, width=width, subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False) or [line])
    return out


# -- secrets and paths -----------------------------------------------------------------------------
def token_text(token: Any, *, reveal: bool) -> str:
    """The token with ``reveal``, else its prefix (as ``devices`` lists it) and ``(redacted)``; ``—`` for none."""
    if not isinstance(token, str) or not token:
        return NONE_MARK
    return token if reveal else f"{token[:TOKEN_PREFIX_CHARS]}… {REDACTED}"


def token_prefix(token: Any) -> str | None:
    return token[:TOKEN_PREFIX_CHARS] if isinstance(token, str) and token else None


def tilde(path: str, home: str | None) -> str:
    """``~/.hermes/remote-sessions.json`` for a path under ``home``; other paths unchanged."""
    import os

    text = str(path)
    if not home:
        return text
    home = str(home).rstrip("/\\") or str(home)
    if text == home:
        return "~"
    for sep in {os.sep, "/"}:
        if text.startswith(home + sep):
            return "~" + sep + text[len(home) + 1:]
    return text


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes, so raw input never drives the terminal."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


# -- route indicator -------------------------------------------------------------------------------
def route_text(indicator: Mapping[str, Any] | None, now: float) -> str:
    """One line for ``hermes-relay route`` from a RouteIndicator dict (core/apitypes.py).

    ``offline (agent not running)`` without one; ``<label> (stale: agent not updating)`` once
    ``valid_until`` has passed; otherwise the label with the URL, a non-connected state and its age.
    """
    if indicator is None:
        return f"{OFFLINE_LABEL} (agent not running)"
    label = printable(str(indicator.get("label") or OFFLINE_LABEL))
    valid_until = to_epoch(indicator.get("valid_until"))
    if valid_until is None or now > valid_until:
        return f"{label} (stale: agent not updating)"
    details = []
    url = indicator.get("url")
    if isinstance(url, str) and url and label != OFFLINE_LABEL:
        details.append(printable(url))
    state = indicator.get("state")
    if isinstance(state, str) and state and state != "connected" and state != label:
        details.append("agent stopped" if state == "stopped" else printable(state.replace("_", " ")))
    if to_epoch(indicator.get("since")) is not None:
        details.append(f"since {ago(indicator.get('since'), now)}")
    return f"{label} ({', '.join(details)})" if details else label


def prompt_indicator(line: str | None, now: float) -> str:
    """The prompt text for one route-file line ``<valid_until_epoch> <label words>``.

    ``[offline]`` without a file or label (or when the label is offline), ``[LAN]`` while fresh,
    ``[LAN?]`` once stale or when the epoch is not a whole number. The shell snippets from
    ``prompt init`` implement exactly this with builtins.
    """
    if line is None:
        return f"[{OFFLINE_LABEL}]"
    parts = line.strip().split(None, 1)
    until = parts[0] if parts else ""
    label = "".join(ch for ch in (parts[1] if len(parts) > 1 else "") if ch.isprintable()).strip()
    if not label or label.lower() == OFFLINE_LABEL:
        return f"[{OFFLINE_LABEL}]"
    fresh = until.isascii() and until.isdigit() and int(now) <= int(until)
    return f"[{label}]" if fresh else f"[{label}?]"


def desktop_status_lines(summary: dict[str, Any] | None, now: float, style: Any = None) -> list[str]:
    """The desktop part of ``status`` for one relay, from the agent's summary (``DesktopService.status_for``)."""
    if not summary:
        return []
    style = style or Style()
    label = summary.get("policy_label") or summary.get("policy") or "?"
    label = printable(str(label))
    parts = [label, f"{summary.get('tools_advertised', 0)} tools", _plural(summary.get("calls_today", 0), "call") + " today"]
    line = " · ".join(parts)
    last = summary.get("last_call")
    if isinstance(last, dict) and last.get("tool"):
        mark = style.ok("✓") if last.get("ok") else style.bad("✗")
        line += f" · last {printable(str(last['tool']))} {mark} {ago(last.get('ts'), now)}"
    lines = [line]
    if summary.get("pending_approvals"):
        lines.append(style.warn(f"{summary['pending_approvals']} call(s) waiting for approval: "
                                "hermes-relay approvals"))
    if summary.get("policy_error"):
        lines.append(style.bad("policy file unreadable (every host restricted): ")
                     + printable(str(summary["policy_error"])))
    return lines


def _plural(count: Any, noun: str) -> str:
    """``1 call``, ``3 calls``."""
    n = count if isinstance(count, int) else 0
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
