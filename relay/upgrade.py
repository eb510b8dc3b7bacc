"""The WebSocket upgrade, parsed once: our own h11 parse of the request head is handed to wsproto.

trio-websocket's ``wrap_server_stream`` gives wsproto a fresh h11 parser and the request bytes again
(``http.ReplayStream``): the head was parsed twice, ~75 us of the ~1 ms a handshake costs the relay.
Here wsproto's handshake gets the parser that already read the request (its state is exactly what
wsproto's own would be: the request and its end read, waiting for the switch) and the request event
itself, so trio-websocket's reader finds wsproto's ``Request`` waiting and answers it without reading.

This leans on wsproto's handshake internals (``_h11_connection``, ``_events``,
``_process_connection_request``) and trio-websocket's reader (``_reader_task``, ``_get_request``), which
``wrap_server_stream`` itself is three lines over. Whatever does not fit the fast path (a request
wsproto refuses, bytes after the head, an unknown library version) goes the old way, the head
replayed into ``wrap_server_stream``: the refusals and their answers are wsproto's own either way.
"""

from __future__ import annotations

from typing import Any

import h11
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.utilities import RemoteProtocolError

from . import http


def seeded(event: Any, conn: h11.Connection) -> WSConnection | None:
    """A server-side wsproto connection that has already received ``event`` (the h11 ``Request`` that
    ``conn`` parsed), or None when this request must take the replay path."""
    try:
        end = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if (not isinstance(end, h11.EndOfMessage) or conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL
            or conn.trailing_data != (b"", False)):
        return None  # a body, or bytes after the head: wsproto's own parser sees them as before
    ws = WSConnection(ConnectionType.SERVER)
    handshake: Any = ws.handshake
    if not (hasattr(handshake, "_h11_connection") and hasattr(handshake, "_events")
            and hasattr(handshake, "_process_connection_request")):
        return None
    try:
        request = handshake._process_connection_request(event)
    except RemoteProtocolError:
        return None  # refused: the replay path lets wsproto and trio-websocket answer it as they always did
    handshake._h11_connection = conn
    handshake._events.append(request)
    return ws


async def server_request(nursery: trio.Nursery, stream: trio.abc.Stream, event: Any, conn: h11.Connection,
                         raw: bytes, max_message_size: int) -> trio_websocket.WebSocketRequest:
    """``trio_websocket.wrap_server_stream`` for a request head we already parsed."""
    ws = seeded(event, conn) if event is not None else None
    if ws is None or not hasattr(trio_websocket.WebSocketConnection, "_get_request"):
        return await trio_websocket.wrap_server_stream(nursery, http.ReplayStream(raw, stream),
                                                       max_message_size=max_message_size)
    connection = trio_websocket.WebSocketConnection(stream, ws, max_message_size=max_message_size)
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()
