"""Minimal HTTP/1.1 plumbing for the relay on top of h11 (no hand-rolled parsing).

The relay serves WebSocket and plain HTTP on one port. ``read_request_head`` parses the request line
and headers with h11 under a size limit; a WebSocket upgrade is answered from that parse
(relay/upgrade.py), with the bytes the client sent behind its head. Every plain response closes the connection:
the API is a handful of tiny calls, and one request per connection keeps slow clients cheap.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import trio

from . import rawenv
from .httpmsg import (  # noqa: F401  (re-exported: the driver's callers use http.X)
    MAX_BODY,
    MAX_HEAD,
    MAX_NESTING,
    BadRequest,
    HttpRequest,
    nesting,
    parse_json_body,
)


async def read_request_head(stream: trio.abc.Stream) -> HttpRequest | None:
    """Read one request head. Returns None if the client closed before sending anything."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(exc.error_status_hint, f"malformed HTTP request: {exc}") from None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            if not data and not received:
                return None
            received += len(data)
            if received > MAX_HEAD + MAX_BODY:
                raise BadRequest(431, "request head too large")
            conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes any bytes-like; its stub says bytes
            continue
        if isinstance(event, h11.Request):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            return HttpRequest(event.method.decode("ascii"), event.target.decode("latin-1"), headers, conn)
        if isinstance(event, h11.ConnectionClosed):
            return None
        raise BadRequest(400, "unexpected HTTP event")


async def read_body(stream: trio.abc.Stream, req: HttpRequest, limit: int = MAX_BODY, *,
                    refuse_from_head: bool = False) -> bytes:
    """The request body, at most ``limit`` bytes (413 past it). ``refuse_from_head``: a declared
    Content-Length over the limit is refused before a byte is read (for callers not worth reading: the
    connection then closes under a client still sending, where a trusted client gets a clean answer)."""
    declared = req.headers.get("content-length", "").strip()
    if refuse_from_head and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body larger than {limit} bytes")
    body = bytearray()
    while True:
        try:
            event = req.conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(400, f"malformed HTTP body: {exc}") from None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                raise BadRequest(400, "connection closed inside the request body")
            req.conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes any bytes-like; its stub says bytes
            continue
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                raise BadRequest(413, f"request body larger than {limit} bytes")
            continue
        if isinstance(event, h11.EndOfMessage):
            return bytes(body)
        raise BadRequest(400, "unexpected HTTP event in body")


SMALL_BODY = 64 << 10  # bytes of a body sent in one write with its head


async def send_json(stream: trio.abc.Stream, status: int, obj: Any, conn: h11.Connection | None = None) -> None:
    if isinstance(obj, rawenv.Forwarded):  # a desktop result as the client sent it: UTF-8 from a UTF-8 frame
        await send_response(stream, status, obj.parts, b"application/json", conn)
        return
    try:  # ASCII-escaped: lone surrogates and every other code point travel as JSON escapes
        body = json.dumps(obj, separators=(",", ":")).encode("ascii")
    except (ValueError, TypeError, RecursionError) as exc:  # never leave a caller without an answer
        status, body = 500, json.dumps({"ok": False, "error": f"the relay could not encode its answer: "
                                                              f"{exc.__class__.__name__}"}).encode("ascii")
    await send_response(stream, status, body, b"application/json", conn)


async def send_response(
    stream: trio.abc.Stream, status: int, body: bytes | list[bytes | memoryview], content_type: bytes,
    conn: h11.Connection | None = None, extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """One response, then the connection closes. The body goes as it is (a list: its pieces in turn):
    with Content-Length framing h11 would only copy it (twice for a 3 MB answer)."""
    parts = [body] if isinstance(body, bytes) else body
    if conn is None or conn.our_state is not h11.SEND_RESPONSE:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(sum(map(len, parts))).encode()),
        (b"connection", b"close"),
        (b"cache-control", b"no-store"),
        *(extra_headers or []),
    ]
    head = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))) or b""
    if len(parts) == 1 and len(parts[0]) <= SMALL_BODY:
        await stream.send_all(head + parts[0])  # one write
        return
    await stream.send_all(head)
    for part in parts:
        await stream.send_all(part)


def _reason(status: int) -> bytes:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
