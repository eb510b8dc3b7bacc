"""Minimal HTTP/1.1 plumbing for the relay: requests parsed by httptools (relay/httpparse.py), answers written whole.

The relay serves WebSocket and plain HTTP on one port. ``read_request_head`` parses the request line
and headers under a size limit; a WebSocket upgrade is answered from that parse (relay/upgrade.py),
with the bytes the client sent behind its head. Every plain response closes the connection: the API is
a handful of tiny calls, and one request per connection keeps slow clients cheap.

A plain TCP socket is read and written directly (as relay/ws.py does): trio's stream methods go
through the scheduler once after every read or write, even one that did not wait, and an HTTP request
is otherwise two or three such passes of a few that it needs. A TLS stream is read and written as a stream.
"""

from __future__ import annotations

import json
import socket
import sys
from http import HTTPStatus
from typing import Any

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
from .httpparse import RequestParse

HEAD_READ = 4096  # bytes per read of a request head
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"))  # json.dumps(obj, separators=...) without an encoder made per call


async def read_request_head(stream: trio.abc.Stream) -> HttpRequest | None:
    """Read one request head. Returns None if the client closed before sending anything."""
    parse = RequestParse()
    raw = _raw_socket(stream)
    received = False
    while not parse.head_done:
        data = await _receive(stream, raw, HEAD_READ)
        if not data:
            if not received:
                return None
            raise BadRequest(400, "malformed HTTP request: the connection closed inside the request head")
        received = True
        parse.feed(data)
    return HttpRequest(parse.method, parse.target, parse.headers, parse)


async def read_body(stream: trio.abc.Stream, req: HttpRequest, limit: int = MAX_BODY, *,
                    refuse_from_head: bool = False) -> bytes:
    """The request body, at most ``limit`` bytes (413 past it). ``refuse_from_head``: a declared
    Content-Length over the limit is refused before a byte is read (for callers not worth reading: the
    connection then closes under a client still sending, where a trusted client gets a clean answer)."""
    declared = req.headers.get("content-length", "").strip()
    if refuse_from_head and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body larger than {limit} bytes")
    parse = req.parse
    assert parse is not None, "a request read by read_request_head"
    raw = _raw_socket(stream)
    while True:
        if parse.body_size > limit:
            raise BadRequest(413, f"request body larger than {limit} bytes")
        if parse.complete:
            return parse.take_body()
        data = await _receive(stream, raw, 65536)
        if not data:
            raise BadRequest(400, "connection closed inside the request body")
        parse.feed(data)


async def send_json(stream: trio.abc.Stream, status: int, obj: Any) -> None:
    if isinstance(obj, rawenv.Forwarded):  # a desktop result as the client sent it: UTF-8 from a UTF-8 frame
        await send_response(stream, status, obj.parts, b"application/json")
        return
    try:  # ASCII-escaped: lone surrogates and every other code point travel as JSON escapes
        body = _COMPACT_ASCII.encode(obj).encode("ascii")
    except (ValueError, TypeError, RecursionError) as exc:  # never leave a caller without an answer
        status, body = 500, json.dumps({"ok": False, "error": f"the relay could not encode its answer: "
                                                              f"{exc.__class__.__name__}"}).encode("ascii")
    await send_response(stream, status, body, b"application/json")


async def send_response(
    stream: trio.abc.Stream, status: int, body: bytes | list[bytes | memoryview], content_type: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """One response, then the connection closes. The body goes as it is, after the head in the same
    write (a list: its pieces in turn, gathered by the kernel, never copied into one)."""
    parts = [body] if isinstance(body, bytes) else body
    head = response_head(status, content_type, sum(map(len, parts)), extra_headers or ())
    raw = _raw_socket(stream)
    if raw is not None:
        await _send_parts(raw, [head, *parts])
    elif len(parts) == 1 and len(parts[0]) <= SMALL_BODY:
        await stream.send_all(head + parts[0])  # one write
    else:
        await stream.send_all(head)
        for part in parts:
            await stream.send_all(part)


SMALL_BODY = 64 << 10  # bytes of a body sent in one write with its head (a TLS stream)
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def response_head(status: int, content_type: bytes, length: int, extra: Any = ()) -> bytes:
    """A response's status line and headers, as h11 wrote them for the relay (``extra``: more (name, value) pairs)."""
    head = (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n"
            b"cache-control: no-store\r\n" % (status, _REASONS.get(status, b""), content_type, length))
    for name, value in extra:
        head += b"%s: %s\r\n" % (name, value)
    return head + b"\r\n"


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The socket under a plain TCP stream (None: TLS, or a stream of a test)."""
    return getattr(stream.socket, "_sock", None) if type(stream) is trio.SocketStream else None


async def _receive(stream: trio.abc.Stream, raw: socket.socket | None, size: int) -> bytes:
    if raw is None:
        return bytes(await stream.receive_some(size))
    while True:
        try:
            return raw.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(raw)


async def _send_parts(raw: socket.socket, parts: list[bytes | memoryview]) -> None:
    """All of ``parts`` in as few writes as the socket takes (one, for an answer that fits its buffer)."""
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        try:
            if sys.platform == "win32":  # no sendmsg: the pieces in turn
                sent = raw.send(views[0])
            else:
                sent = raw.sendmsg(views)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(raw)
            continue
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]
