"""A terminal attachment's byte bookkeeping, pure: the output ring, the input ledger, output framing.

Both directions are byte streams counted in absolute offsets from 0 for the attachment's stream
(docs/shell-protocol.md "Offsets"):

- ``OutputRing`` keeps the last ``capacity`` bytes the PTY produced, addressed by absolute offset: a
  socket that resumes at ``out_seq`` continues from there when ``start <= out_seq <= end``; older bytes
  are gone (a gap: tmux redraws, a bare PTY is nudged). It never forgets what the attached socket was not
  sent yet (``append``'s ``keep``): it outgrows ``capacity`` instead, by one PTY read at most.
- ``InputLedger`` decides each ``terminal.input``: ``accepted`` is the end of what was queued for the
  PTY, ``written`` (the ``in_seq`` the relay acknowledges) the end of what reached it. A chunk whose
  ``seq`` lies below ``accepted`` is trimmed (the overlap is a duplicate from a resend); one above it is
  refused (``input_gap``): exactly once, in order.
- ``output_frame`` cuts the next frame (at most ``MAX_FRAME`` bytes, never inside a UTF-8 character
  when more bytes may follow) and says whether it travels as text or as base64.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass


class OutputRing:
    """The last ``capacity`` output bytes, addressed by absolute offset."""

    def __init__(self, capacity: int, start: int = 0):
        self.capacity = capacity
        self._buf = bytearray()
        self.start = start  # offset of _buf[0]

    @property
    def end(self) -> int:
        return self.start + len(self._buf)

    def append(self, data: bytes, keep: int | None = None) -> None:
        """Add ``data``, forgetting the oldest bytes beyond ``capacity`` but none at or above ``keep``."""
        self._buf += data
        over = len(self._buf) - self.capacity
        if keep is not None:
            over = min(over, keep - self.start)
        if over > 0:
            del self._buf[:over]
            self.start += over

    def holds(self, offset: int) -> bool:
        return self.start <= offset <= self.end

    def read(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes from ``offset`` (which the ring must hold)."""
        if not self.holds(offset):
            raise ValueError(f"offset {offset} is outside the ring [{self.start}, {self.end}]")
        i = offset - self.start
        return bytes(self._buf[i:i + limit])


@dataclass
class InputVerdict:
    """What to do with one input chunk: queue ``data`` (maybe empty: all duplicate), or refuse it (``gap``)."""

    data: bytes = b""
    duplicate: int = 0  # bytes dropped as already received
    gap: bool = False


class InputLedger:
    """The input offsets of one stream: ``accepted`` (queued for the PTY) >= ``written`` (reached it)."""

    def __init__(self, start: int = 0) -> None:
        self.accepted = start
        self.written = start

    def offer(self, seq: int, data: bytes) -> InputVerdict:
        if seq > self.accepted:
            return InputVerdict(gap=True)
        skip = min(self.accepted - seq, len(data))
        fresh = data[skip:]
        self.accepted += len(fresh)
        return InputVerdict(fresh, duplicate=skip)

    def append(self, data: bytes) -> None:
        """Input without offsets (a reference client): always queued."""
        self.accepted += len(data)

    def wrote(self, n: int) -> None:
        self.written += n
        assert self.written <= self.accepted


def utf8_complete(data: bytes) -> int:
    """The length of ``data`` without a UTF-8 sequence cut short at its end (0-3 bytes held back)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:
            return n  # ASCII: nothing pending
        if b >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n if back >= need else n - back
    return n  # only continuation bytes (invalid anyway): send as they are


def output_frame(data: bytes, *, more_may_follow: bool) -> tuple[bytes, dict[str, str]] | None:
    """The next frame from ``data`` (already cut to MAX_FRAME): (its bytes, ``{"data"}`` or ``{"data_b64"}``).

    None when ``data`` is only the start of a UTF-8 character and more may follow (wait for it).
    """
    cut = utf8_complete(data)
    if cut == 0:
        if more_may_follow:
            return None
        cut = len(data)
    chunk = data[:cut]
    try:
        return chunk, {"data": chunk.decode("utf-8")}
    except UnicodeDecodeError:
        return chunk, {"data_b64": base64.b64encode(chunk).decode("ascii")}


def decode_input(payload: dict[str, object]) -> bytes | str:
    """The bytes of a ``terminal.input`` payload's ``data`` (text) or ``data_b64``; a str says what is wrong."""
    if "data_b64" in payload:
        raw = payload["data_b64"]
        if not isinstance(raw, str):
            return "data_b64 must be a base64 string"
        try:
            return base64.b64decode(raw.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            return "data_b64 is not valid base64"
    text = payload.get("data")
    if not isinstance(text, str):
        return "terminal.input needs data (text) or data_b64"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return "data holds a lone surrogate: send bytes that are not UTF-8 as data_b64"
