"""The WebSocket upgrade (RFC 6455 §4.2), answered from the request head the relay already parsed.

relay/http.py parsed the head (relay/httpparse.py); here it is checked as a WebSocket opening handshake and
answered with its ``101`` (the key's accept token is wsproto's), or refused: 426 with the version this
relay speaks for another version, 400 for a missing or malformed key or a request with a body. No
extension and no subprotocol is ever chosen. Bytes the client sent right behind its head (its first
frame) are handed on to the socket (relay/ws.py), not lost.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from wsproto.utilities import generate_accept_token

from .httpmsg import HttpRequest

VERSION = "13"
_REPLY = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: %s\r\n\r\n")


@dataclass(frozen=True, slots=True)
class Accepted:
    reply: bytes  # the 101 response, to write as it is
    trailing: bytes  # what came after the head: WebSocket frames


@dataclass(frozen=True, slots=True)
class Rejected:
    status: int
    text: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def answer(req: HttpRequest) -> Accepted | Rejected:
    """Accept ``req`` (a GET with Upgrade: websocket and Connection: upgrade) or say why not."""
    headers = req.headers
    if headers.get("sec-websocket-version", "").strip() != VERSION:
        return Rejected(426, f"WebSocket version {VERSION} only",
                        ((b"sec-websocket-version", VERSION.encode()),))
    key = headers.get("sec-websocket-key", "").strip()
    if not _valid_key(key):
        return Rejected(400, "missing or malformed Sec-WebSocket-Key")
    parse = req.parse
    if parse is None or parse.trailing is None:  # llhttp did not take it for an upgrade (no `upgrade` token)
        return Rejected(400, "malformed upgrade request")
    if parse.has_body():
        return Rejected(400, "an upgrade request has no body")
    return Accepted(_REPLY % generate_accept_token(key.encode("ascii")), parse.trailing)


def _valid_key(key: str) -> bool:
    """Base64 of 16 bytes (24 characters), as the RFC requires of a client's nonce."""
    if len(key) != 24 or not key.isascii():
        return False
    try:
        return len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except binascii.Error:
        return False
