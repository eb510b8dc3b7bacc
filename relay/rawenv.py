"""A big envelope decoded once, its payload's own text kept: a result the relay only forwards is not encoded again.

A desktop tool's answer (``desktop.response``, up to the authenticated 4 MiB frame) goes from the
WebSocket frame to the HTTP answer. ``decode`` validates exactly as ``envelope.decode`` does (it
falls back to it for every error, so bad input gets the same clear error) and returns the payload's
span of the frame as well: the top-level object is walked member by member, each value parsed by
json's own C scanner (``raw_decode`` at an index), so the cost is that of ``json.loads`` and the
payload's text is a slice. ``forwarded`` then builds the HTTP body from that text with the relay's
``target`` appended, instead of ``json.dumps`` of the whole result (~15 ms per 3 MB here).

Small frames (under ``SPAN_MIN``) take the plain path: the saving would not pay for the walk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..core import envelope
from . import wsframe

SPAN_MIN = 64 << 10  # characters: below this a frame is decoded the plain way
_SCANNER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def text(env: envelope.Envelope) -> str:
    """``env.encode()``, in one pass of one encoder made once, for the relay's own small messages
    (``auth.ok``, replies): ``Envelope.encode`` first walks the value for non-ASCII strings and builds an
    encoder per call, ~10 us of a handshake. Text that is all ASCII, and without DEL (which only the ASCII
    encoder escapes), is what that encoder writes; anything else is encoded as ``Envelope.encode`` does."""
    obj: dict[str, Any] = dict(env.extra)
    obj.update({"channel": env.channel, "type": env.type, "id": env.id, "payload": env.payload})
    out = _COMPACT.encode(obj)
    if out.isascii() and "\x7f" not in out:
        return out
    return envelope.encoded(obj)[0]


@dataclass(frozen=True)
class RawEnvelope(envelope.Envelope):
    """An envelope with its payload's JSON text as it arrived: ``frame[start:end]`` (not copied out)."""

    span: tuple[str, int, int] | None = None

    @property
    def raw_payload(self) -> str:
        if self.span is None:
            return ""
        frame, start, end = self.span
        return frame[start:end]


def decode(message: str | bytes, *, max_size: int) -> envelope.Envelope:
    """``envelope.decode``, keeping the payload's text for a big text frame (a ``RawEnvelope``)."""
    if isinstance(message, str) and SPAN_MIN <= len(message) <= max_size:
        found = _walk(message)
        if found is not None:
            return _envelope(*found, message, max_size)
    return envelope.decode(message, max_size=max_size)


def _envelope(obj: dict[str, Any], span: tuple[int, int], message: str, max_size: int) -> envelope.Envelope:
    channel, typ, payload = obj.get("channel"), obj.get("type"), obj.get("payload")
    if not isinstance(channel, str) or not isinstance(typ, str) or not isinstance(payload, dict):
        return envelope.decode(message, max_size=max_size)  # raises envelope.decode's own error
    extra = {k: v for k, v in obj.items() if k not in ("channel", "type", "payload", "id")}
    msg_id = obj.get("id")
    return RawEnvelope(channel, typ, payload, str(msg_id) if msg_id is not None else "", extra, (message, *span))


def _walk(text: str) -> tuple[dict[str, Any], tuple[int, int]] | None:
    """The top-level object and its ``payload`` member's text, or None for anything else (then the
    plain decoder runs and says what is wrong)."""
    scan = _SCANNER.raw_decode
    try:
        i = _skip(text, 0)
        if text[i:i + 1] != "{":
            return None
        i = _skip(text, i + 1)
        obj: dict[str, Any] = {}
        span = (0, 0)
        if text[i:i + 1] == "}":
            i += 1
        else:
            while True:
                if text[i:i + 1] != '"':
                    return None
                key, i = scan(text, i)
                i = _skip(text, i)
                if text[i:i + 1] != ":":
                    return None
                start = _skip(text, i + 1)
                value, i = scan(text, start)
                obj[key] = value
                if key == "payload":
                    span = (start, i)  # the last one wins, as in json.loads
                i = _skip(text, i)
                sep = text[i:i + 1]
                i = _skip(text, i + 1)
                if sep == "}":
                    break
                if sep != ",":
                    return None
        if i != len(text):
            return None
    except (ValueError, RecursionError):
        return None
    return obj, span


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not JSON whitespace."""
    found = _WS.match(text, i)
    return found.end() if found is not None else i


def forwarded(payload: dict[str, Any], span: tuple[str, int, int] | None,
              extra: dict[str, Any]) -> list[bytes | memoryview] | None:
    """The HTTP body ``{**payload, **extra}`` as pieces of bytes, from the payload's own text in the
    frame (an ASCII frame is encoded once and sliced without copying); None when it cannot be spliced
    (no text kept, an empty payload, a key of ``extra`` already in it)."""
    if span is None or not payload or any(k in payload for k in extra):
        return None
    frame, start, end = span
    while end > start and frame[end - 1] in " \t\n\r":  # JSON whitespace after the payload's "}"
        end -= 1
    if end <= start or frame[end - 1] != "}":
        return None
    tail = ("," + json.dumps(extra, separators=(",", ":"))[1:]).encode("ascii")
    try:
        if frame.isascii():  # (a character is a byte: the frame's own UTF-8, when kept, is sliced as it is)
            utf8 = frame.utf8 if isinstance(frame, wsframe.Text) else frame.encode("ascii")
            return [memoryview(utf8)[start:end - 1], tail]
        return [frame[start:end - 1].encode("utf-8"), tail]
    except UnicodeEncodeError:  # a lone surrogate cannot come from a UTF-8 frame; never guess
        return None


class Forwarded(dict[str, Any]):
    """An HTTP answer that is already encoded (``parts``, sent one after another); as a dict it is the
    same answer, decoded."""

    __slots__ = ("parts",)

    def __init__(self, body: dict[str, Any], parts: list[bytes | memoryview]):
        super().__init__(body)
        self.parts = parts
