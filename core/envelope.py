"""The relay's WebSocket envelope: one JSON text frame per message (sans-IO).

    {"channel": str, "type": str, "id": str, "payload": object}

``decode`` is strict about shape (an object with string channel and type, an object payload) and
lenient about extras, which it keeps, because other relay versions add fields. Anything else raises
RemoteProtocolError so the caller can close with a clear reason instead of crashing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import RemoteProtocolError

MAX_ENVELOPE = 1 << 20  # 1 MiB, matching trio-websocket's default message cap

SYSTEM = "system"
AUTH = "auth"
AUTH_OK = "auth.ok"
AUTH_FAIL = "auth.fail"


@dataclass(frozen=True)
class Envelope:
    channel: str
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        obj: dict[str, Any] = dict(self.extra)
        obj.update({"channel": self.channel, "type": self.type, "id": self.id, "payload": self.payload})
        return encoded(obj)[0]


ASCII_WALK = 64  # values looked at to find every string in an envelope ASCII (a bigger one is encoded as usual)


def encoded(obj: Any) -> tuple[str, int]:
    """``obj``'s text as an envelope is sent (compact JSON) and its size in UTF-8 bytes."""
    if _ascii_only(obj, [ASCII_WALK]):  # the same text from the ASCII encoder, faster (a 3 MB read: 11.6 -> 9 ms)
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
        return text, len(text)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    if text.isascii():  # (a flag CPython keeps on the string: no pass over it)
        return text, len(text)
    try:
        return text, len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate (a non-UTF-8 file name): sent as a \udcXX escape, intact
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
        return text, len(text)


def utf8(obj: Any) -> bytes:
    """``encoded(obj)``'s text in UTF-8, byte for byte. A value of plain types only (``_plain``) is written by
    orjson (a C encoder: a 3 MB read's answer in ~1.5 ms, not ~7); anything else, and anything orjson refuses
    (a lone surrogate, an int past 64 bits), by ``encoded``. orjson is loaded at the first call: only the
    agent's answers come here, never the CLI."""
    if _plain(obj, [ASCII_WALK]):
        fast = _orjson()
        if fast is not None:
            try:
                return fast(obj)
            except TypeError:  # orjson.JSONEncodeError: a lone surrogate or a huge int; json handles both
                pass
    return encoded(obj)[0].encode("utf-8")


_ORJSON: list[Callable[[Any], bytes] | None] = []


def _orjson() -> Callable[[Any], bytes] | None:
    """orjson's ``dumps`` (compact, UTF-8, keys in order: what ``encoded`` writes), or None without it."""
    if not _ORJSON:
        try:
            import orjson
        except ImportError:  # a platform without its wheel: json does it all, slower
            _ORJSON.append(None)
        else:
            _ORJSON.append(orjson.dumps)
    return _ORJSON[0]


def _plain(obj: Any, budget: list[int]) -> bool:
    """``obj`` holds only exact dicts with str keys, lists, str, int, bool and None, found within ``budget[0]``
    values. For these orjson writes what json writes (every code point but a lone surrogate, which it refuses,
    is escaped alike); it differs on floats (``1e-05``, NaN), on subclasses (an Enum, a dataclass: values json
    refuses) and on other key types, so any of those goes to json."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    kind = type(obj)
    if kind is dict:
        return all(type(k) is str and _plain(v, budget) for k, v in obj.items())
    if kind is list:
        return all(_plain(v, budget) for v in obj)
    return kind is str or kind is int or kind is bool or obj is None


def _ascii_only(obj: Any, budget: list[int]) -> bool:
    """Every string (and key) in ``obj`` is ASCII, found within ``budget[0]`` values; False past it. For such
    a value ``ensure_ascii`` changes nothing but DEL (``\\u007f`` then, the same JSON string): both encoders
    escape quotes, backslash and control characters alike, and only DEL and non-ASCII characters differ."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    if isinstance(obj, str):
        return obj.isascii()
    if isinstance(obj, dict):
        return all((not isinstance(k, str) or k.isascii()) and _ascii_only(v, budget) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_ascii_only(v, budget) for v in obj)
    return obj is None or isinstance(obj, (bool, int, float))


_KEYS = ["channel", "type", "id", "payload"]


class Encoded(dict[str, Any]):
    """An envelope (a dict with exactly ``channel``, ``type``, ``id``, ``payload``, in that order) and its
    text in UTF-8, which is what ``Envelope.encode`` makes of it: encoded once where its size was checked,
    and sent as it is (agent/link.py) instead of encoded again."""

    __slots__ = ("data",)

    def __init__(self, obj: dict[str, Any], data: bytes):
        super().__init__(obj)
        self.data = data

    @classmethod
    def of(cls, obj: dict[str, Any], data: bytes) -> dict[str, Any]:
        """An ``Encoded`` when ``obj`` has the envelope's keys in order, else ``obj`` itself."""
        return cls(obj, data) if list(obj) == _KEYS and isinstance(obj.get("id"), str) and obj["id"] else obj


def decode(message: str | bytes, *, max_size: int = MAX_ENVELOPE) -> Envelope:
    if len(message) > max_size:
        raise RemoteProtocolError(f"message of {len(message)} bytes exceeds {max_size}", close_code_hint=1009)
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("binary frame is not UTF-8 JSON", close_code_hint=1003) from exc
    try:
        obj = json.loads(message)
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(f"invalid JSON: {exc.msg}", close_code_hint=1003) from exc
    except ValueError as exc:  # an integer of more than 4300 digits (int()'s limit), not a JSONDecodeError
        raise RemoteProtocolError(f"invalid JSON: {exc}", close_code_hint=1003) from None
    except RecursionError:  # "[[[[..." within the size cap exhausts the parser's stack
        raise RemoteProtocolError("invalid JSON: nested too deeply", close_code_hint=1003) from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("envelope must be a JSON object", close_code_hint=1003)
    channel, typ = obj.pop("channel", None), obj.pop("type", None)
    if not isinstance(channel, str) or not isinstance(typ, str):
        raise RemoteProtocolError("envelope needs string 'channel' and 'type' fields", close_code_hint=1003)
    payload = obj.pop("payload", None)
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise RemoteProtocolError("envelope 'payload' must be an object", close_code_hint=1003)
    msg_id = obj.pop("id", None)
    return Envelope(channel, typ, payload, str(msg_id) if msg_id is not None else "", obj)
