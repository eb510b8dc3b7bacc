"""The agent's own text frames (agent/wsframe.py) and how transport.Connection writes them: wsproto and
the relay's ServerSocket read them back whole, masked with a fresh key, and they never interleave with
each other nor with trio-websocket's own frames (pings, pongs). Real loopback sockets."""

from __future__ import annotations

import json
import os
import socket

import pytest
import trio
from helpers import accept_websocket, close_from_client
from wsproto.frame_protocol import FrameProtocol, Opcode

from hermes_relay.agent import transport, wsframe
from hermes_relay.core import envelope
from hermes_relay.core.errors import ConnectionLostError
from hermes_relay.core.routes import Route
from hermes_relay.relay.ws import ConnectionClosed, ServerSocket

SIZES = [0, 1, 3, 4, 5, 125, 126, 127, 65535, 65536, 65537, 3 << 20]


def _text(size: int) -> bytes:
    """``size`` bytes of UTF-8 text with multi-byte characters and JSON escapes in it."""
    unit = '{"a":"\\n\\"é✓😀"}'.encode()
    data = (unit * (size // len(unit) + 1))[:size]
    return data.decode("utf-8", "ignore").encode()[:size]


def _parse(data: bytes) -> list[tuple[Opcode, bool, str | bytes]]:
    """What a server's wsproto makes of ``data``: (opcode, fin, payload) per frame."""
    server = FrameProtocol(client=False, extensions=[])
    server.receive_bytes(data)
    return [(f.opcode, f.frame_finished and f.message_finished, f.payload) for f in server.received_frames()]


@pytest.mark.parametrize("size", SIZES)
def test_a_frame_is_a_final_masked_text_frame_a_server_reads_back(size: int) -> None:
    payload = _text(size)
    frame = wsframe.client_frame(payload)
    assert frame[1] & 0x80  # masked, as a client's frame must be
    assert _parse(bytes(frame)) == [(Opcode.TEXT, True, payload.decode())]


@pytest.mark.parametrize("size", SIZES)
def test_a_frame_is_byte_for_byte_wsprotos_with_the_same_key(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _text(size)
    key = bytes([0x00, 0x7F, 0x80, 0xFF])
    monkeypatch.setattr("wsproto.frame_protocol.os.urandom", lambda n: key)
    theirs = FrameProtocol(client=True, extensions=[]).send_data(payload.decode(), True)
    assert wsframe.client_frame(payload, key=key) == theirs


def test_each_frame_gets_a_fresh_random_key() -> None:
    keys = {bytes(wsframe.client_frame(b"same text")[2:6]) for _ in range(64)}
    assert len(keys) > 60  # 32 random bits each: a repeat among 64 is a 1-in-a-million event


# -- through transport.Connection, to the relay's own socket -------------------------------------------
async def _relay_side(sockets: list[ServerSocket], *, task_status: trio.TaskStatus[int]) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0] as listener:
        task_status.started(listener.socket.getsockname()[1])
        stream, answer = await accept_websocket(listener)
        sockets.append(ServerSocket(stream, max_message=8 << 20, receive_size=64 << 10, trailing=answer.trailing))
        await stream.send_all(answer.reply)
        await trio.sleep_forever()


async def _connect(nursery: trio.Nursery) -> tuple[transport.Connection, ServerSocket]:
    sockets: list[ServerSocket] = []
    port = await nursery.start(_relay_side, sockets)
    dialed = await transport.dial(Route(0, 0, "lan", f"ws://127.0.0.1:{port}"), expected_pin=None)
    conn = await transport.open_websocket(nursery, dialed, timeout=5)
    return conn, sockets[0]


async def _exchange(conn: transport.Connection, server: ServerSocket, data: bytes) -> str | bytes:
    """Send ``data`` while the relay reads (a big frame does not fit in the sockets' buffers)."""
    got: list[str | bytes] = []

    async def receive() -> None:
        got.append(await server.get_message())

    with trio.fail_after(10):
        async with trio.open_nursery() as both:
            both.start_soon(receive)
            await conn.send_utf8(data)
    return got[0]


async def test_big_and_small_messages_arrive_whole_at_the_relay(nursery: trio.Nursery) -> None:
    conn, server = await _connect(nursery)
    for size in SIZES:
        payload = _text(size)
        assert await _exchange(conn, server, payload) == payload.decode()
    await conn.send_text("héllo ✓ 😀")
    assert await server.get_message() == "héllo ✓ 😀"
    await close_from_client(server, conn.aclose)


async def test_a_lone_surrogate_is_refused_by_send_text_and_escaped_by_the_envelope(nursery: trio.Nursery) -> None:
    conn, server = await _connect(nursery)
    with pytest.raises(UnicodeEncodeError):  # as trio-websocket refused it
        await conn.send_text("bad \udcff name")
    obj = {"channel": "desktop", "type": "desktop.response", "id": "i",
           "payload": {"ok": True, "result": {"name": "bad \udcff name", "text": "é" * 100_000}}}
    assert json.loads(await _exchange(conn, server, envelope.utf8(obj))) == obj  # the surrogate came back intact
    await close_from_client(server, conn.aclose)


async def test_concurrent_sends_pings_and_pongs_never_interleave_a_frame(nursery: trio.Nursery) -> None:
    """Big frames fill the socket's buffers, so each write stops midway while small sends, our pings
    (trio-websocket's frames) and our pongs to the relay's pings (its reader's) wait for the stream."""
    conn, server = await _connect(nursery)
    big = [os.urandom(1 << 20).hex().encode() + str(i).encode() for i in range(4)]  # 2 MB each
    senders = 3
    got: list[str] = []
    pongs: list[bytes] = []

    class Beat:
        def pong(self, payload: bytes) -> None:
            pongs.append(payload)

    server.beat = Beat()

    async def send_big() -> None:
        for data in big:
            await conn.send_utf8(data)

    async def send_small(who: int) -> None:
        for i in range(40):
            await conn.send_text(f"small {who} {i} é")
            if i % 10 == 0:
                await trio.sleep(0)

    async def ping() -> None:
        for _ in range(5):
            await conn.ping()

    async def relay_pings() -> None:
        for i in range(5):
            await server.send_ping(b"relay %d" % i)
            await trio.sleep(0)

    async def receive() -> None:
        while len(got) < len(big) + senders * 40:
            got.append(await server.get_message())  # (answers our pings on the way, notes our pongs)

    with trio.fail_after(30):
        async with trio.open_nursery() as both:
            both.start_soon(receive)
            both.start_soon(send_big)
            for who in range(senders):
                both.start_soon(send_small, who)
            both.start_soon(ping)
            both.start_soon(relay_pings)
    assert [m for m in got if not m.startswith("small")] == [d.decode() for d in big]
    for who in range(senders):  # every message whole and in its sender's order
        assert [m for m in got if m.startswith(f"small {who} ")] == [f"small {who} {i} é" for i in range(40)]
    with trio.fail_after(10):  # the last pongs come in with the next message
        while len(pongs) < 5:
            await conn.send_text("more")
            await server.get_message()
    assert pongs == [b"relay %d" % i for i in range(5)]
    await close_from_client(server, conn.aclose)


async def test_a_send_after_the_relay_closed_is_a_lost_connection_with_its_code(nursery: trio.Nursery) -> None:
    conn, server = await _connect(nursery)
    async with trio.open_nursery() as both:
        both.start_soon(server.aclose, 4001, "bye")
        with pytest.raises(ConnectionLostError) as got:
            await conn.get_message()
    assert transport.close_code(got.value) == 4001
    with pytest.raises(ConnectionLostError) as sent:
        await conn.send_utf8(b"too late")
    assert transport.close_code(sent.value) == 4001
    with pytest.raises(ConnectionClosed):
        await server.get_message()
    await conn.aclose()
    await server.stream.aclose()


async def test_a_failed_write_is_a_lost_connection_and_ends_the_reader_at_once(nursery: trio.Nursery) -> None:
    """A write that failed may have left part of a frame on the wire: the reader is ended too (here only
    our sending half is shut, so nothing else would end it)."""
    conn, server = await _connect(nursery)
    conn.dialed.stream.socket.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]
    with trio.fail_after(5):
        with pytest.raises(ConnectionLostError):
            await conn.send_utf8(b"x" * 1000)
        with pytest.raises(ConnectionLostError):
            await conn.get_message()
    await conn.aclose()
    await server.stream.aclose()
