"""An HTTP request as the relay's core sees it (parsed by relay/httpparse.py, no I/O) and the JSON body rule.

relay/http.py reads these off a trio stream; relay/api.py and relay/core.py decide on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

MAX_HEAD = 16 * 1024  # request line + headers
MAX_BODY = 64 * 1024  # JSON bodies here are a few hundred bytes
MAX_NESTING = 100  # levels of objects and arrays a JSON body (or a desktop answer) may nest


class BodyParse(Protocol):
    """The parse a request's head came from, which goes on with its body (relay/httpparse.py's RequestParse)."""

    complete: bool  # the whole request is in
    body_size: int
    trailing: bytes | None  # after an upgrade: what came behind the head

    def feed(self, data: bytes) -> None: ...
    def take_body(self) -> bytes: ...
    def has_body(self) -> bool: ...


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]
    parse: BodyParse | None = None  # the parse goes on: a body (relay/http.py read_body), an upgrade (relay/upgrade.py)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def is_websocket_upgrade(self) -> bool:
        return (
            self.method == "GET"
            and "websocket" in self.headers.get("upgrade", "").lower()
            and "upgrade" in self.headers.get("connection", "").lower()
        )


def parse_json_body(body: bytes) -> dict[str, Any]:
    """A JSON object body; BadRequest (400) for anything else, whatever the bytes (never another error)."""
    if not body.strip():
        return {}
    try:
        obj = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise BadRequest(400, f"body is not valid JSON: nested more than {MAX_NESTING} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also an integer of more than 4300 digits
        raise BadRequest(400, f"body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise BadRequest(400, "body must be a JSON object")
    if nesting(obj) > MAX_NESTING:
        raise BadRequest(400, f"body is not valid JSON: nested more than {MAX_NESTING} levels")
    return obj


def nesting(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items: Any = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))
    return deepest
