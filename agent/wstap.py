"""The relay's messages read off the stream under trio-websocket, for a link whose reader waits for them.

trio-websocket reads every frame through wsproto (a generator, a buffer object, an incremental UTF-8
decoder), puts the message in a memory channel, and the link's reader takes it in the scheduler's next
batch: about a fifth of the agent's time on a small desktop call. Nearly every frame a relay sends is a
whole text message in one frame. ``Tap`` sits in the stream trio-websocket reads (agent/transport.py
``_WatchedStream``) and follows the frame boundaries of every byte after the upgrade's answer. A final,
unmasked text frame without reserved bits, at most ``max_message`` bytes of UTF-8 and with its length in
the fewest bytes, is taken and its text handed to ``deliver`` when ``ready()`` says the link's reader
waits for a message and every message wsproto was handed has reached it; wsproto never sees that frame.
Anything else goes to wsproto unchanged and in order: the upgrade's answer, control frames, fragments,
binary, a frame ``deliver`` declines or that is not UTF-8, and every frame behind a data frame handed on
in the same read (a message taken must not overtake one still in wsproto). So anything unusual is parsed,
answered and refused exactly as without the tap. Sans-IO: ``feed`` takes what the socket gave and returns
what wsproto must see.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

_FIN: Final = 0x80
_TEXT: Final = 0x1
_BINARY: Final = 0x2
_CONTINUATION: Final = 0x0
_CLOSE: Final = 0x8
_HEAD_END: Final = b"\r\n\r\n"


def head(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(header bytes, payload bytes) of the frame whose first bytes ``data`` holds, or None while the
    header is cut short."""
    size = len(data)
    if size < 2:
        return None
    second = data[1]
    n, at = second & 0x7F, 2
    if n == 126:
        if size < 4:
            return None
        (n,) = struct.unpack_from("!H", data, 2)
        at = 4
    elif n == 127:
        if size < 10:
            return None
        (n,) = struct.unpack_from("!Q", data, 2)
        at = 10
    if second & 0x80:  # masked (a relay must not mask: wsproto refuses it)
        at += 4
        if size < at:
            return None
    return at, n


def plain_head(n: int) -> int:
    """The header bytes of an unmasked frame of ``n`` payload bytes with its length in the fewest bytes
    (wsproto refuses a length in more)."""
    return 2 if n < 126 else 4 if n < 1 << 16 else 10


class Tap:
    """One connection's frame follower (see the module's docstring)."""

    def __init__(self, max_message: int):
        self.max_message = max_message
        self.deliver: Callable[[str], bool] | None = None  # the link's: True when it took the message
        self.ready: Callable[[], bool] = _never
        self.handed = 0  # whole data messages handed to wsproto: each comes out of trio-websocket as one
        self._in_head = True  # the upgrade's answer is still being read
        self._seen = b""  # its last bytes read, while its end is looked for
        self._left = 0  # bytes still to hand on of the frame being handed on
        self._need = 0  # the whole size of the frame being taken (0: none)
        self._hold = bytearray()  # kept back: a header cut by the read, or the frame being taken
        self._fragmented = False  # a fragmented data message handed on is not finished
        self._closing = False  # a close frame was handed on: nothing more is taken

    @property
    def holding(self) -> int:
        """Bytes kept back from wsproto (a cut header, or the frame being taken)."""
        return len(self._hold)

    def release(self) -> bytes:
        """Whatever is kept back, for wsproto: the stream ended (it then sees the cut frame, as without the
        tap), or the tap is taken away."""
        held, self._hold, self._need = bytes(self._hold), bytearray(), 0
        return held

    def feed(self, data: bytes | bytearray) -> bytes | bytearray:
        """What wsproto must be handed of ``data`` (and of what was kept back), in order; the messages taken
        on the way were delivered."""
        view = memoryview(data)
        out = bytearray()
        pos, end = 0, len(view)
        if self._in_head:  # the upgrade's answer (once per connection, a few hundred bytes)
            seen = self._seen + bytes(view)
            at = seen.find(_HEAD_END)
            if at < 0:
                self._seen = seen[-(len(_HEAD_END) - 1):]
                return data
            pos = at + len(_HEAD_END) - len(self._seen)
            self._in_head, self._seen = False, b""
            out += view[:pos]
        takes = True  # false once a data frame was handed on in this read
        while pos < end:
            if self._left:
                k = min(self._left, end - pos)
                out += view[pos:pos + k]
                self._left -= k
                pos += k
                continue
            if self._need:
                k = min(self._need - len(self._hold), end - pos)
                self._hold += view[pos:pos + k]
                pos += k
                if len(self._hold) < self._need:
                    break
                frame, self._hold, self._need = self._hold, bytearray(), 0
                if not self._take(frame):
                    out += frame  # declined, or not UTF-8: wsproto's, as a message handed on
                    self.handed += 1
                    takes = False
                continue
            if self._hold:  # a header cut by the last read, completed from this one
                held = len(self._hold)
                self._hold += view[pos:pos + 14]
                parsed = head(self._hold)
                del self._hold[held:]
            else:
                held, parsed = 0, head(view[pos:pos + 14])
            if parsed is None:  # cut again: kept back until the rest comes (wsproto could do nothing with it)
                self._hold += view[pos:]
                break
            at, n = parsed
            first = self._hold[0] if held else view[pos]
            if (takes and first == _FIN | _TEXT and at == plain_head(n) and n <= self.max_message
                    and not self._fragmented and not self._closing and self.deliver is not None and self.ready()):
                self._need = at + n  # taken: gathered (with the header kept back) until it is whole
                continue
            opcode = first & 0x0F
            if opcode in (_TEXT, _BINARY, _CONTINUATION):
                if first & _FIN:
                    self.handed += 1
                    self._fragmented = False
                else:
                    self._fragmented = True
                takes = False
            elif opcode == _CLOSE:
                self._closing = True
            if held:
                out += self._hold
                self._hold = bytearray()
            self._left = at + n - held
        return out

    def _take(self, frame: bytearray) -> bool:
        """Deliver a whole taken frame's text; False when it goes to wsproto instead."""
        parsed = head(frame)
        assert parsed is not None  # (a whole frame)
        at = parsed[0]
        deliver = self.deliver
        if deliver is None or not self.ready():  # things changed while it came in pieces
            return False
        try:
            text = str(memoryview(frame)[at:], "utf-8")
        except UnicodeDecodeError:  # wsproto closes with 1007
            return False
        return deliver(text)


def _never() -> bool:
    return False
