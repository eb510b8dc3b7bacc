"""What the relay host may not make the user's terminal do: a streaming filter of its output.

Output from the relay host reaches the user's terminal raw, so whoever controls that host (or a file
``cat`` there) could write the local clipboard (OSC 52, which the reference's tmux config enables) or
make the terminal type answers (report requests: the answer arrives on stdin and is sent to the
remote as if the user typed it, telling it the local terminal's version, colours and title). Both are
removed unless the user opts in (``--allow-clipboard``, ``--allow-reports``):

- OSC 52 (clipboard write or query);
- colour queries: OSC 4, 10-19 with a ``?`` (xterm answers with the colour);
- DA1/DA2/DA3 (``CSI c``, ``CSI > c``, ``CSI = c``), ``ESC Z`` (DECID);
- DSR/CPR (``CSI n``, ``CSI ? n``), DECRQM (``CSI … $ p``), XTVERSION (``CSI > q``), DECREQTPARM (``CSI x``);
- window and title reports (``CSI 11/13/14/15/16/18/19/20/21 t``);
- DECRQSS (``DCS $ q … ST``) and XTGETTCAP (``DCS + q … ST``).

Everything else passes through unchanged, byte for byte. ``OutputFilter.feed`` is a small state
machine that keeps its state between chunks (a sequence may be split anywhere) and never holds more
than ``MAX_HELD`` bytes: a control sequence longer than that is passed on (or, while being removed,
dropped) as it streams.
"""

from __future__ import annotations

ESC, BEL = 0x1B, 0x07
MAX_HELD = 256  # bytes of one control sequence held while deciding what it is
_CSI_MAX = 64  # a longer CSI is passed through unread (no report request is that long)
_OSC_PREFIX_MAX = 8  # "52;" / "11;" is decided within these bytes
_COLOUR_OSCS = frozenset({b"4", *(str(n).encode() for n in range(10, 20))})
_REPORT_T = frozenset({b"11", b"13", b"14", b"15", b"16", b"18", b"19", b"20", b"21"})

# states
_GROUND, _ESC, _CSI, _CSI_PASS, _OSC_HEAD, _OSC_HOLD, _OSC_PASS, _OSC_DROP, _DCS_HEAD, _DCS_PASS, _DCS_DROP = range(11)
_STRING_STATES = (_OSC_PASS, _OSC_DROP, _DCS_PASS, _DCS_DROP)


class OutputFilter:
    """Feed the relay host's output in chunks; each call returns what may reach the terminal now."""

    def __init__(self, *, allow_clipboard: bool = False, allow_reports: bool = False):
        self.allow_clipboard = allow_clipboard
        self.allow_reports = allow_reports
        self._state = _GROUND
        self._held = bytearray()  # the sequence being decided (starts with ESC)
        self._esc_in_string = False  # an ESC just arrived inside an OSC/DCS string (ST or a new sequence)
        self.removed = 0  # sequences removed so far

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _GROUND:
                j = data.find(b"\x1b", i)
                if j < 0:
                    out += data[i:]
                    break
                out += data[i:j]
                self._held = bytearray(b"\x1b")
                self._state = _ESC
                i = j + 1
                continue
            b = data[i]
            i += 1
            if state in _STRING_STATES:
                self._string_byte(b, out)
            elif state == _ESC:
                self._esc_byte(b, out)
            elif state == _CSI:
                self._held.append(b)
                if 0x40 <= b <= 0x7E:
                    if not self._drop_csi(bytes(self._held[2:-1]), b):
                        out += self._held
                    else:
                        self.removed += 1
                    self._reset()
                elif len(self._held) > _CSI_MAX:
                    out += self._held
                    self._held.clear()
                    self._state = _CSI_PASS
            elif state == _CSI_PASS:
                out.append(b)
                if 0x40 <= b <= 0x7E:
                    self._reset()
            elif state == _OSC_HEAD:
                self._osc_head_byte(b, out)
            elif state == _OSC_HOLD:
                self._osc_hold_byte(b, out)
            elif state == _DCS_HEAD:
                self._dcs_head_byte(b, out)
        return bytes(out)

    def _reset(self) -> None:
        self._held.clear()
        self._state = _GROUND
        self._esc_in_string = False

    def _esc_byte(self, b: int, out: bytearray) -> None:
        self._held.append(b)
        if b == ord("["):
            self._state = _CSI
        elif b == ord("]"):
            self._state = _OSC_HEAD
        elif b == ord("P"):
            self._state = _DCS_HEAD
        elif b == ESC:  # ESC ESC: the first one stands alone
            out += b"\x1b"
            self._held = bytearray(b"\x1b")
        else:
            if b == ord("Z") and not self.allow_reports:  # DECID: a DA request
                self.removed += 1
            else:
                out += self._held
            self._reset()

    def _drop_csi(self, body: bytes, final: int) -> bool:
        if self.allow_reports:
            return False
        prefix = body[:1] if body[:1] in (b"?", b">", b"=", b"<") else b""
        params = body[len(prefix):]
        intermediates = bytes(c for c in params if 0x20 <= c <= 0x2F)
        if final == ord("c"):
            return not intermediates and prefix in (b"", b">", b"=")
        if final == ord("n"):
            return not intermediates and prefix in (b"", b"?")
        if final == ord("p"):
            return intermediates == b"$"
        if final == ord("q"):
            return prefix == b">" and not intermediates
        if final == ord("x"):
            return prefix == b"" and not intermediates
        if final == ord("t"):
            return prefix == b"" and not intermediates and params.split(b";")[0] in _REPORT_T
        return False

    def _osc_head_byte(self, b: int, out: bytearray) -> None:
        if b in (BEL, ESC) or b == ord(";") or len(self._held) >= 2 + _OSC_PREFIX_MAX:
            number = bytes(self._held[2:])
            self._held.append(b)
            if number == b"52" and not self.allow_clipboard:
                self._drop_string(_OSC_DROP, out, b)
            elif number in _COLOUR_OSCS and not self.allow_reports and b == ord(";"):
                self._state = _OSC_HOLD  # a colour set or a query: known at its end
            else:
                self._pass_string(_OSC_PASS, out, b)
            return
        self._held.append(b)

    def _osc_hold_byte(self, b: int, out: bytearray) -> None:
        if self._esc_in_string:
            self._esc_in_string = False
            if b == ord("\\"):
                self._held += b"\x1b\\"
                self._finish_colour(out)
                return
            self._finish_colour(out)  # ESC ended the string and starts a new sequence
            self._restart_at_esc(b, out)
            return
        if b == ESC:
            self._esc_in_string = True
            return
        self._held.append(b)
        if b == BEL:
            self._finish_colour(out)
        elif len(self._held) > MAX_HELD:  # no colour set is that long: drop the rest too
            self.removed += 1
            self._held.clear()
            self._state = _OSC_DROP

    def _restart_at_esc(self, b: int, out: bytearray) -> None:
        """An ESC inside a string that is not its terminator: a new sequence began at it, ``b`` is its next byte."""
        self._held = bytearray(b"\x1b")
        self._state = _ESC
        self._esc_byte(b, out)

    def _finish_colour(self, out: bytearray) -> None:
        if b"?" in self._held:
            self.removed += 1
        else:
            out += self._held
        self._reset()

    def _dcs_head_byte(self, b: int, out: bytearray) -> None:
        self._held.append(b)
        head = bytes(self._held[2:])
        if head in (b"$", b"+"):
            return
        if head in (b"$q", b"+q") and not self.allow_reports:
            self._drop_string(_DCS_DROP, out, b)
        else:
            self._pass_string(_DCS_PASS, out, b)

    def _drop_string(self, state: int, out: bytearray, last: int) -> None:
        self.removed += 1
        self._held.clear()
        self._state = state
        if last == BEL and state == _OSC_DROP:
            self._reset()
        elif last == ESC:
            self._esc_in_string = True

    def _pass_string(self, state: int, out: bytearray, last: int) -> None:
        if last == ESC:  # the ESC is held until we know whether it is ST
            out += self._held[:-1]
            self._esc_in_string = True
        else:
            out += self._held
        self._held.clear()
        self._state = state
        if last == BEL and state == _OSC_PASS:
            self._reset()

    def _string_byte(self, b: int, out: bytearray) -> None:
        passing = self._state in (_OSC_PASS, _DCS_PASS)
        if self._esc_in_string:
            self._esc_in_string = False
            if b == ord("\\"):
                if passing:
                    out += b"\x1b\\"
                self._reset()
                return
            self._restart_at_esc(b, out)  # the string ended; ESC begins a new sequence
            return
        if b == ESC:
            self._esc_in_string = True
            return
        if b == BEL and self._state in (_OSC_PASS, _OSC_DROP):
            if passing:
                out.append(b)
            self._reset()
            return
        if passing:
            out.append(b)
