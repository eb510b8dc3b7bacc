"""The relay's own WebSocket (relay/ws.py, relay/upgrade.py): one task reads, any task writes, frames
never interleave, a close from another task ends the reader, the upgrade is checked and answered.

Real loopback sockets with trio-websocket as the client, except where the peer must misbehave on the
wire (raw frames from wsproto) or time must pass (trio's memory streams under the autojump clock).
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
import trio_websocket
from helpers import close_from_client, open_stream, read_to_eof, ws_connect
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import FrameProtocol

from hermes_relay.relay import http, upgrade
from hermes_relay.relay.config import CLOSE_GRACE
from hermes_relay.relay.heartbeat import Heartbeat
from hermes_relay.relay.ws import ConnectionClosed, ServerSocket

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample nonce
HEAD = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n")


async def _accept(stream: trio.abc.Stream, **kwargs) -> ServerSocket:
    """The relay's handshake on ``stream``: its head read and answered as relay/conn.py does."""
    req = await http.read_request_head(stream)
    assert req is not None
    answer = upgrade.answer(req)
    assert isinstance(answer, upgrade.Accepted)
    await stream.send_all(answer.reply)
    return ServerSocket(stream, max_message=kwargs.pop("max_message", 1 << 20), trailing=answer.trailing, **kwargs)


async def _pair(nursery: trio.Nursery) -> tuple[ServerSocket, trio_websocket.WebSocketConnection, trio.SocketStream]:
    client_stream, server_stream = await _tcp_pair()
    clients = []

    async def connect() -> None:
        clients.append(await trio_websocket.wrap_client_stream(nursery, client_stream, "127.0.0.1", "/",
                                                               message_queue_size=64, max_message_size=16 << 20))

    async with trio.open_nursery() as both:
        both.start_soon(connect)
        server = await _accept(server_stream)
    return server, clients[0], server_stream


async def test_messages_both_ways_and_the_peers_ping_is_answered(nursery):
    server, client, _ = await _pair(nursery)
    await client.send_message("from the client")
    assert await server.get_message() == "from the client"
    await client.send_message(b"\x00binary")
    assert await server.get_message() == b"\x00binary"
    await server.send_message("from the relay")
    assert await client.get_message() == "from the relay"
    with trio.fail_after(5):
        async with trio.open_nursery() as both:
            both.start_soon(client.ping, b"are you there")  # returns once the pong came
            both.start_soon(server.get_message)  # answers the ping on the way
            await trio.testing.wait_all_tasks_blocked()
            await client.send_message("unblock")
    await close_from_client(server, client.aclose)


async def test_the_peers_close_is_answered_and_ends_the_reader(nursery):
    server, client, _ = await _pair(nursery)
    async with trio.open_nursery() as both:
        both.start_soon(client.aclose, 4321, "bye")
        with pytest.raises(ConnectionClosed) as closed:
            await server.get_message()
    assert (closed.value.reason.code, closed.value.reason.reason) == (4321, "bye")
    assert client.closed is not None and client.closed.code == 4321  # our answer arrived: a clean close
    with pytest.raises(ConnectionClosed):
        await server.send_message("too late")
    await server.stream.aclose()


async def test_a_close_from_another_task_sends_the_frame_and_bounds_the_readers_wait(nursery):
    """A revocation closes a socket from outside its task: the reader ends once the peer answers."""
    server, client, _ = await _pair(nursery)
    done = trio.Event()

    async def reader() -> None:
        with trio.CancelScope() as wait:
            server.wait = wait
            with pytest.raises(ConnectionClosed):
                await server.get_message()
        done.set()

    nursery.start_soon(reader)
    await trio.testing.wait_all_tasks_blocked()
    await server.aclose(4001, "session revoked")
    with trio.fail_after(5):
        with pytest.raises(trio_websocket.ConnectionClosed):
            await client.get_message()  # trio-websocket answers the close
        await done.wait()
    assert client.closed is not None and (client.closed.code, client.closed.reason) == (4001, "session revoked")
    await server.stream.aclose()
    await client._stream.aclose()


async def test_a_peer_that_never_answers_a_close_is_given_up_after_the_grace(autojump_clock):
    ours, theirs = trio.testing.memory_stream_pair()
    client = _RawClient(theirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.handshake)
        server = await _accept(ours)
    started = trio.current_time()
    await server.aclose(1000, "bye")  # from the owner: waits for the answer, which never comes
    assert trio.current_time() - started == pytest.approx(CLOSE_GRACE)
    assert isinstance(await client.event(), CloseConnection)


async def test_a_protocol_error_is_answered_with_its_close_code_and_ends_the_reader():
    client, server_stream = await _tcp_pair()
    await client.send_all(HEAD.format(key=KEY).encode())
    server = await _accept(server_stream)
    await client.send_all(bytes(FrameProtocol(client=False, extensions=[]).send_data("unmasked", True)))
    with pytest.raises(ConnectionClosed) as closed:
        await server.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 1002  # RFC 6455: protocol error
    await server_stream.aclose()
    head, frame = (await read_to_eof(client)).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 1002  # a close frame saying so
    await client.aclose()


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    client = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    server_stream = await listener.accept()
    await listener.aclose()
    return client, server_stream


async def test_frames_the_client_sent_behind_its_upgrade_request_are_not_lost():
    client, server_stream = await _tcp_pair()
    proto = Connection(ConnectionType.CLIENT)
    await client.send_all(HEAD.format(key=KEY).encode() + proto.send(TextMessage("right behind")))
    server = await _accept(server_stream)
    with trio.fail_after(5):
        assert await server.get_message() == "right behind"
    await server_stream.aclose()
    await client.aclose()


@pytest.mark.parametrize("headers,status", [
    ("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: " + KEY, 426),
    ("Sec-WebSocket-Key: " + KEY, 426),
    ("Sec-WebSocket-Version: 13", 400),
    ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=", 400),  # base64, but not of 16 bytes
    ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ########################", 400),
    ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + "\r\nContent-Length: 2", 400),
])
async def test_an_upgrade_the_relay_cannot_accept_is_refused_with_a_reason(relay, headers, status):
    stream = await open_stream(relay.url)
    await stream.send_all(f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{headers}"
                          f"\r\n\r\nhi".encode())
    with trio.fail_after(5):
        raw = await read_to_eof(stream)
    await stream.aclose()
    assert raw.startswith(f"HTTP/1.1 {status} ".encode())
    if status == 426:
        assert b"sec-websocket-version: 13\r\n" in raw.lower()
    ws = await ws_connect(relay.url)  # the relay still serves
    assert ws.closed is None


def test_the_accept_token_is_the_rfcs():
    from hermes_relay.relay.httpmsg import HttpRequest
    from hermes_relay.relay.httpparse import RequestParse

    parse = RequestParse()
    parse.feed(HEAD.format(key=KEY).encode())
    answer = upgrade.answer(HttpRequest("GET", "/", parse.headers, parse))
    assert isinstance(answer, upgrade.Accepted)
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer.reply  # RFC 6455 §1.3


async def test_a_write_cancelled_before_a_byte_went_out_leaves_the_socket_usable(nursery):
    server, client, _ = await _pair(nursery)
    with trio.CancelScope() as scope:
        scope.cancel()
        await server.send_message("never sent")
    assert server.open
    await server.send_message("sent")
    assert await client.get_message() == "sent"
    await close_from_client(server, client.aclose)


async def test_writers_take_turns_and_a_frame_is_never_cut_by_another():
    client_stream, server_stream = await _tcp_pair()
    client = _RawClient(client_stream)
    async with trio.open_nursery() as both:
        both.start_soon(client.handshake)
        server = await _accept(server_stream)
    big = "x" * (8 << 20)  # far more than the socket buffers: the first writer waits midway (nobody reads yet)
    async with trio.open_nursery() as writers:
        writers.start_soon(server.send_message, big)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(3):
            writers.start_soon(server.send_message, f"small {n}")
            await trio.testing.wait_all_tasks_blocked()
        got = [await client.message() for _ in range(4)]
    assert got == [big, "small 0", "small 1", "small 2"]
    await server_stream.aclose()
    await client_stream.aclose()


class _TakesOneByteFirst(socket.socket):
    """A socket whose first send takes one byte only (a kernel send buffer with a byte of room left): an
    OS event a test cannot cause on demand. ``on_partial`` runs right after that short write."""

    def __init__(self, real: socket.socket, on_partial):
        super().__init__(real.family, real.type, real.proto, fileno=real.detach())
        self._on_partial = on_partial

    def send(self, data, *flags):
        if self._on_partial is not None:
            on_partial, self._on_partial = self._on_partial, None
            sent = super().send(bytes(data[:1]), *flags)
            on_partial()
            return sent
        return super().send(data, *flags)


async def test_a_heartbeat_ping_the_socket_takes_in_part_is_finished_before_any_other_frame(nursery):
    """The heartbeat writes its ping straight to the socket when no one else is writing; if the socket
    takes only part of it, the socket stays held until the rest is written, so a message sent meanwhile
    comes after the whole ping (interleaved, the client would see garbage)."""
    server, client, server_stream = await _pair(nursery)
    heartbeat = Heartbeat(0.05)
    await nursery.start(_started, heartbeat)
    sent_after = trio.Event()

    def send_meanwhile() -> None:
        nursery.start_soon(server.send_message, "after the ping")
        sent_after.set()

    sock = server_stream.socket
    sock._sock = server._raw = _TakesOneByteFirst(sock._sock, send_meanwhile)
    beat = heartbeat.add(server)
    assert beat is not None
    nursery.start_soon(_read_until_closed, server)  # reads the pong
    with trio.fail_after(5):
        await sent_after.wait()
        # trio-websocket's client answers the ping and hands over the message after it
        assert await client.get_message() == "after the ping"
        while beat.pending or beat.round == 0:
            await trio.sleep(0.01)
    assert beat.round >= 1 and client.closed is None
    beat.stop()
    await client.aclose()  # the reader started above answers the close
    await server_stream.aclose()


async def _read_until_closed(server: ServerSocket) -> None:
    try:
        while True:
            await server.get_message()
    except ConnectionClosed:
        pass


async def _started(heartbeat, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as own:
        own.start_soon(heartbeat.run)
        while heartbeat._nursery is None:
            await trio.lowlevel.checkpoint()
        task_status.started()


class _RawClient:
    """A WebSocket client on a memory stream that answers nothing on its own (wsproto's frames)."""

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self.proto = Connection(ConnectionType.CLIENT)

    async def handshake(self) -> None:
        await self.stream.send_all(HEAD.format(key=KEY).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await self.stream.receive_some()
        assert head.startswith(b"HTTP/1.1 101 ")
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:
            self.proto.receive_data(rest)

    async def message(self) -> str:
        parts = []
        while True:
            event = await self.event()
            assert isinstance(event, TextMessage)
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts)

    async def event(self):
        while True:
            for event in self.proto.events():
                if not isinstance(event, (Ping, Pong)):
                    return event
            self.proto.receive_data(await self.stream.receive_some())


async def test_a_disposed_socket_is_freed_by_reference_counting_alone():
    """The relay freezes long-lived objects out of the collector (relay/gcpolicy.py): wsproto's parser is a
    generator that refers back to its owner, a cycle that stayed frozen after each connection (about ten
    objects per closed connection in the bench's leak row). ``dispose`` breaks it."""
    import gc
    import weakref

    ours, theirs = trio.testing.memory_stream_pair()
    client = _RawClient(theirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.handshake)
        server = await _accept(ours)
    await theirs.send_all(client.proto.send(TextMessage("hello")))
    assert await server.get_message() == "hello"
    parser = weakref.ref(server._proto._proto)
    gc.disable()
    try:
        server.dispose()
        del server
        assert parser() is None  # freed at once, no collection needed
    finally:
        gc.enable()


async def test_a_client_that_never_reads_is_closed_by_the_heartbeat_and_stalls_nobody(relay_factory):
    """A hostile client floods pings and reads nothing: the relay's pongs fill the socket and its writer
    waits. The heartbeat's timeout still ends that connection (the wait is cancelled, a frame cut
    midway breaks the socket rather than garbling it) and every other client is served meanwhile."""
    from helpers import auth_frame, http_json, pair, receive_json, register_code

    relay = await relay_factory(heartbeat=1.0)
    _, ok = await pair(relay.url, relay.http)
    stream = await open_stream(relay.url)
    await stream.send_all(HEAD.format(key=KEY).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    proto = Connection(ConnectionType.CLIENT)
    await stream.send_all(proto.send(TextMessage(auth_frame({"session_token": ok["session_token"]}))))
    ping = proto.send(Ping(b"p" * 125))
    raw = stream.socket._sock  # written without waiting, until the kernel's buffers on both sides are full
    with trio.fail_after(10):
        while True:
            try:
                raw.send(ping * 64)  # (a reset here would fail the test: the relay gave up early)
            except BlockingIOError:
                break
            await trio.lowlevel.checkpoint()
    bystander, _ = await pair(relay.url, relay.http)  # served while the flooder's writer is stuck
    await bystander.send_message(auth_frame({}, "x").replace('"auth"', '"ping"'))
    assert (await receive_json(bystander))["type"] == "pong"
    with trio.fail_after(4):  # a heartbeat interval or two, then the flooder is gone
        while (await http_json("GET", f"{relay.http}/health"))[1]["connections"] > 2:
            await trio.sleep(0.05)
    await register_code(relay.http)  # still serving
    await stream.aclose()


async def test_a_write_cut_midway_breaks_the_socket_and_ends_its_readers_wait(nursery):
    """A frame half out cannot be followed by another (the client would read garbage): the socket takes no
    more frames, and its reader stops waiting, so the connection closes instead of reading on for a peer
    it can no longer answer."""
    client_stream, server_stream = await _tcp_pair()
    client = _RawClient(client_stream)
    async with trio.open_nursery() as both:
        both.start_soon(client.handshake)
        server = await _accept(server_stream)
    reader_done = trio.Event()

    async def reader() -> None:
        with trio.CancelScope() as wait:
            server.wait = wait
            await server.get_message()  # the client sends nothing: only the break ends this
        reader_done.set()

    nursery.start_soon(reader)
    writer = trio.CancelScope()

    async def write() -> None:
        with writer:
            await server.send_message("x" * (8 << 20))  # the client reads nothing: stuck midway

    nursery.start_soon(write)
    await trio.testing.wait_all_tasks_blocked()
    writer.cancel()
    with trio.fail_after(5):
        await reader_done.wait()
    assert not server.open
    with pytest.raises(ConnectionClosed):
        await server.send_message("after half a frame")
    await server_stream.aclose()
    await client_stream.aclose()
