"""The WebSocket frames the relay writes, and the frames it reads most, without wsproto's per-frame machinery.

wsproto (relay/ws.py's engine) reads every frame through a generator, a buffer object and an incremental
UTF-8 decoder, and writes one through two copies: ~15 us for a small message, twice per WebSocket
handshake and per desktop call. Nearly every frame a relay reads is a whole message in one frame (FIN, no
reserved bits, masked, text or binary) that came in one read: ``take`` reads those. At the first frame
that is anything else (a control frame, a fragment, a frame cut by the read, invalid UTF-8, a length
encoded in more bytes than it needs, which wsproto refuses) it stops, and relay/ws.py hands wsproto the
bytes from there, so anything unusual is parsed, answered and refused exactly as before. ``frame``
writes a server's frame (FIN, unmasked) as wsproto writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..core import wsmask

TEXT = 0x1
BINARY = 0x2
PONG = 0xA
_SMALL_UNMASK = 512  # bytes: up to this many, unmasked as one integer; more, a byte table per key byte


KEEP_UTF8 = 64 << 10  # bytes of a text message from which its UTF-8 is kept beside it (``Text``)


class Text(str):
    """A big text message that keeps the UTF-8 it came as (``utf8``): a desktop result the relay forwards
    is sliced from it instead of encoded again (relay/rawenv.py ``forwarded``)."""

    utf8: bytes | bytearray

    def __new__(cls, utf8: bytes | bytearray) -> Text:
        text = super().__new__(cls, utf8, "utf-8")
        text.utf8 = utf8
        return text


def frame(message: str | bytes) -> bytes:
    """``message`` as one unmasked frame (text for a str)."""
    if isinstance(message, str):
        payload, first = message.encode("utf-8"), 0x80 | TEXT
    else:
        payload, first = message, 0x80 | BINARY
    n = len(payload)
    if n <= 125:
        head = bytes((first, n))
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


def take(data: bytes | bytearray, max_message: int,
         on_pong: Callable[[bytes | bytearray], None] | None = None) -> tuple[list[str | bytes], int]:
    """The whole single-frame messages at the start of ``data`` (a client's: masked), each at most
    ``max_message`` bytes, and the offset of the first byte not taken. With ``on_pong``, whole masked
    pongs among them are taken too and their payloads handed to it (the heartbeat's: one per connection
    and interval, the frame a relay reads most after messages)."""
    messages: list[str | bytes] = []
    i, size = 0, len(data)
    while size - i >= 6:
        first, second = data[i], data[i + 1]
        opcode = first ^ 0x80
        if opcode not in (TEXT, BINARY) or not second & 0x80:  # not FIN, reserved bits, control, unmasked
            if on_pong is None or (end := _pong_end(data, i)) < 0:  # a pong is taken, anything else is wsproto's
                break
            on_pong(_unmask(data[i + 6:end], data[i + 2:i + 6]))
            i = end
            continue
        n, at = second & 0x7F, i + 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, at)
            at += 2
            if n <= 125:
                break
        elif n == 127:
            if size - at < 8:
                break
            (n,) = struct.unpack_from("!Q", data, at)
            at += 8
            if n <= 0xFFFF or n >> 63:
                break
        end = at + 4 + n
        if end > size or n > max_message:
            break
        payload = _unmask(data[at + 4:end], data[at:at + 4])
        if opcode == TEXT:
            try:
                messages.append(payload.decode("utf-8") if n < KEEP_UTF8 else Text(payload))
            except UnicodeDecodeError:  # wsproto closes with 1007
                break
        else:
            messages.append(bytes(payload))
        i = end
    return messages, i


def pongs(data: bytes | bytearray) -> list[bytes | bytearray] | None:
    """The payloads of ``data`` when it is whole masked pongs and nothing else (FIN, no reserved bits, at
    most 125 bytes each: what a client answers to pings); None for anything else, even a pong cut short."""
    out: list[bytes | bytearray] = []
    i = 0
    while i < len(data):
        end = _pong_end(data, i)
        if end < 0:
            return None
        out.append(_unmask(data[i + 6:end], data[i + 2:i + 6]))
        i = end
    return out or None


def _pong_end(data: bytes | bytearray, i: int) -> int:
    """Where the whole masked pong at ``data[i:]`` ends (FIN, no reserved bits, at most 125 bytes: all
    control frames), or -1 when the bytes there are not one."""
    if len(data) - i < 6 or data[i] != 0x80 | PONG:
        return -1
    n = data[i + 1] ^ 0x80  # (unmasked: n > 127)
    return i + 6 + n if n <= 125 and len(data) - i >= 6 + n else -1


def frame_size(data: bytes | bytearray, i: int, max_message: int) -> int | None:
    """The bytes of the frame at ``data[i:]`` when it is one ``take`` would read once it is all there (its
    head is, and says FIN, text or binary, masked, at most ``max_message``); None for anything else."""
    if len(data) - i < 2:
        return None
    first, second = data[i], data[i + 1]
    if first ^ 0x80 not in (TEXT, BINARY) or not second & 0x80:
        return None
    n, at = second & 0x7F, i + 2
    if n == 126:
        if len(data) - at < 2:
            return None
        (n,) = struct.unpack_from("!H", data, at)
        at += 2
        if n <= 125:
            return None
    elif n == 127:
        if len(data) - at < 8:
            return None
        (n,) = struct.unpack_from("!Q", data, at)
        at += 8
        if n <= 0xFFFF or n >> 63:
            return None
    return at - i + 4 + n if n <= max_message else None


def _unmask(payload: bytes | bytearray, key: bytes | bytearray) -> bytes | bytearray:
    """The payload unmasked (a bytearray is unmasked in place: it is a copy already)."""
    n = len(payload)
    if n <= _SMALL_UNMASK:
        return (int.from_bytes(payload, "little") ^ int.from_bytes((key * (n // 4 + 1))[:n], "little")).to_bytes(n, "little")
    out = payload if isinstance(payload, bytearray) else bytearray(payload)
    wsmask.mask_in_place(out, 0, key)
    return out
