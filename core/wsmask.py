"""WebSocket masking at C speed (RFC 6455 §5.3), for the agent's frames and the relay's reads.

A payload is XORed with a 4-byte key repeating: every fourth byte with the same key byte, so four
``bytes.translate`` calls over the four strided slices mask (or unmask) it in place. A key byte's table is
made when first needed and kept (making one takes ~1.5 us).
"""

from __future__ import annotations

_TABLES: list[bytes | None] = [None] * 256  # the byte table of each key byte
_IDENTITY = int.from_bytes(bytes(range(256)), "big")


def table(byte: int) -> bytes:
    """The ``bytes.translate`` table that XORs every byte with ``byte``."""
    made = _TABLES[byte]
    if made is None:
        made = _TABLES[byte] = (_IDENTITY ^ int.from_bytes(bytes((byte,)) * 256, "big")).to_bytes(256, "big")
    return made


def mask_in_place(buf: bytearray, start: int, key: bytes | bytearray) -> None:
    """XOR ``buf[start:]`` with ``key`` repeating (masking and unmasking are the same)."""
    for j in range(4):
        buf[start + j::4] = buf[start + j::4].translate(table(key[j]))
