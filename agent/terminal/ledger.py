"""The input marks of one shell, in the CLI's offsets: ``acked ≤ sent ≤ typed`` (docs/shell-protocol.md).

Pure (no trio, no clock: times are passed in), so the rules are tested exactly:

- input leaves in order, in chunks of at most ``MAX_CHUNK`` bytes cut on UTF-8 boundaries, with at
  most ``MAX_IN_FLIGHT`` bytes sent and not acknowledged;
- what was typed but not acknowledged is kept (at most ``MAX_HELD``: the CLI stops reading at 64 KiB
  unacknowledged, the rest is slack);
- after a drop, the bytes between ``acked`` and ``sent`` are either resent from the relay's exact
  offset (our relay: ``resume``) or declared *in doubt*: counted done, reported, never resent (the
  reference relay, where a doubled Enter would run a command twice). Input acknowledged less than one
  round trip before the drop is reported as in doubt too (the reference runs each input as its own task,
  so its pong can overtake input that has not reached the PTY yet).
"""

from __future__ import annotations

from collections import deque

MAX_CHUNK = 4096
MAX_IN_FLIGHT = 16384
MAX_QUEUED = 65536  # keys typed during a gap
MAX_HELD = MAX_QUEUED + MAX_IN_FLIGHT
ACK_HISTORY = 64


class InputOverflow(Exception):
    """The CLI typed more than the ledger holds (it should have stopped reading at 64 KiB)."""


def utf8_cut(data: bytes | bytearray | memoryview, limit: int) -> int:
    """The longest prefix of ``data`` of at most ``limit`` bytes that ends on a UTF-8 character boundary
    (``limit`` itself when ``data`` is no longer; bytes that are not UTF-8 are cut anywhere)."""
    if len(data) <= limit:
        return len(data)
    start = limit
    for back in range(1, 4):  # a lead byte at most 3 bytes before the cut
        i = limit - back
        if i < 0:
            break
        b = data[i]
        if b & 0xC0 == 0x80:
            continue
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        start = i if i + need > limit else limit
        break
    return start


class InputLedger:
    """Typed input not yet acknowledged, and the three marks, in the CLI's offsets."""

    def __init__(self, acked: int = 0, sent: int | None = None, held: bytes = b""):
        self.acked = acked
        self._held = bytearray(held)  # bytes acked..typed
        self.sent = min(max(acked if sent is None else sent, acked), self.typed)
        self._acks: deque[tuple[float, int]] = deque(maxlen=ACK_HISTORY)  # (when, bytes newly acked)
        self.in_doubt = 0  # bytes declared in doubt so far (never resent)
        self.dropped = 0  # queued bytes dropped unsent (a gap too long, a new shell)

    @property
    def typed(self) -> int:
        return self.acked + len(self._held)

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked

    @property
    def unsent(self) -> int:
        return self.typed - self.sent

    def type(self, seq: int, data: bytes) -> int:
        """Take ``data`` typed at CLI offset ``seq``; bytes below ``typed`` are duplicates (a reopened CLI
        resending) and skipped. Returns the bytes taken. ValueError for a gap, InputOverflow past the bound."""
        if seq > self.typed:
            raise ValueError(f"input at offset {seq} leaves a gap after {self.typed}")
        new = data[self.typed - seq:]
        if len(self._held) + len(new) > MAX_HELD:
            raise InputOverflow(f"more than {MAX_HELD} bytes typed and not acknowledged")
        self._held += new
        return len(new)

    def take(self, *, limit_in_flight: bool = True) -> tuple[int, bytes] | None:
        """The next chunk to send (its CLI offset and bytes), advancing ``sent``; None when there is
        nothing to send or the in-flight window is full."""
        room = MAX_IN_FLIGHT - self.in_flight if limit_in_flight else MAX_CHUNK
        if self.unsent <= 0 or room <= 0:
            return None
        start = self.sent - self.acked
        pending = memoryview(self._held)[start:]
        n = utf8_cut(pending, min(MAX_CHUNK, room))
        if n == 0:  # the next character does not fit the window: wait for an ack
            return None
        chunk = bytes(pending[:n])
        seq = self.sent
        self.sent += n
        return seq, chunk

    def ack(self, upto: int, now: float = 0.0) -> int:
        """The relay has everything below ``upto`` (clamped to ``sent``). Returns the bytes newly acked."""
        upto = min(upto, self.sent)
        n = upto - self.acked
        if n <= 0:
            return 0
        del self._held[:n]
        self.acked = upto
        self._acks.append((now, n))
        return n

    def resume(self, upto: int) -> int:
        """Our relay says exactly what reached the PTY: everything below ``upto`` (a CLI offset between
        ``acked`` and ``typed``); what was sent above it is sent again. Returns the bytes to resend."""
        upto = max(self.acked, min(upto, self.typed))
        self.sent = max(self.sent, upto)
        self.ack(upto)
        resend = self.sent - upto
        self.sent = upto
        return resend

    def drop_in_doubt(self, now: float = 0.0, rtt: float = 0.0) -> tuple[int, int]:
        """After a drop without exact offsets: the bytes sent and not acknowledged are counted done and
        never resent. Returns (those bytes, the bytes acknowledged within ``rtt`` before ``now``, which
        may not have reached the PTY either)."""
        unacked = self.in_flight
        del self._held[:unacked]
        self.acked = self.sent
        recent = sum(n for when, n in self._acks if when > now - rtt) if rtt > 0 else 0
        self._acks.clear()
        self.in_doubt += unacked + recent
        return unacked, recent

    def drop_unsent(self) -> int:
        """Drop the bytes typed but never sent (a gap too long, a new shell); they count as acknowledged
        (the CLI must not resend them). Nothing may be in flight (settle it first: ``resume`` or
        ``drop_in_doubt``). Returns how many."""
        if self.in_flight:
            raise ValueError("input is in flight: settle it before dropping what was not sent")
        n = self.unsent
        self._held.clear()
        self.dropped += n
        self.acked = self.sent = self.sent + n
        return n
