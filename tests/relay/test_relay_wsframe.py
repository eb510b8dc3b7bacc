"""relay/wsframe.py: the relay's own reading of common client frames and writing of its frames gives
exactly what wsproto gives, and everything else still goes through wsproto.

Client frames are wsproto's own (masked); the socket reads them through trio's memory streams, in the
pieces hypothesis chose, with the shortcut on and off.
"""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.frame_protocol import FrameProtocol, XorMaskerSimple

from hermes_relay.relay import ws, wsframe
from hermes_relay.relay.ws import ConnectionClosed, ServerSocket


def _client() -> FrameProtocol:
    return FrameProtocol(client=True, extensions=[])


@pytest.mark.parametrize("message", ["", "a", "é" * 62, "x" * 125, "x" * 126, "\u20ac" * 30000, "x" * 65535,
                                     "x" * 65536, b"", b"\x00\xff" * 100, bytes(70000)])
def test_a_frame_is_the_one_wsproto_writes(message: str | bytes) -> None:
    server = Connection(ConnectionType.SERVER)
    expected = server.send(TextMessage(message) if isinstance(message, str) else BytesMessage(message))
    assert wsframe.frame(message) == expected


@pytest.mark.parametrize("message", ["", "hello", "é€😀" * 100, "x" * 126, "y" * 70000, b"", b"\x00\xff" * 300])
def test_whole_messages_are_taken_and_unmasked(message: str | bytes) -> None:
    client = _client()
    wire = bytes(client.send_data(message)) + bytes(client.send_data(message))
    assert wsframe.take(wire, 1 << 20) == ([message, message], len(wire))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.integers(0, 2000), st.randoms(use_true_random=False))
def test_a_payload_is_unmasked_as_wsproto_unmasks_it_whatever_the_key(key: bytes, size: int, rnd) -> None:
    # Byte tables are kept per key byte: every key, one after another, still unmasks with its own bytes.
    payload = rnd.randbytes(size)
    assert wsframe._unmask(payload, key) == bytes(XorMaskerSimple(key).process(payload))


def _masked(first: int, payload: bytes, length: bytes | None = None) -> bytes:
    head = bytes((first, 0x80 | len(payload))) if length is None else bytes((first,)) + length
    return head + b"\0\0\0\0" + payload  # a zero key: the payload as it is


@pytest.mark.parametrize("rest", [
    bytes(_client().ping(b"p")),  # a control frame
    bytes(_client().send_data("half", False)),  # a fragment
    bytes(_client().send_data("cut short"))[:-1],  # not all there
    _masked(0x81, b"\xc3("),  # invalid UTF-8 (wsproto closes with 1007)
    _masked(0xC1, b"x"),  # a reserved bit
    b"\x81\x05hello",  # unmasked
    _masked(0x81, b"x" * 10, bytes([0x80 | 126]) + struct.pack("!H", 10)),  # a length in more bytes than it needs
    _masked(0x81, b"x" * 10, bytes([0x80 | 127]) + struct.pack("!Q", 10)),
    bytes(_client().send_data("x" * 101)),  # over the limit
])
def test_anything_else_is_left_from_its_first_byte(rest: bytes) -> None:
    first = bytes(_client().send_data("first"))
    assert wsframe.take(first + rest, 100) == (["first"], len(first))
    assert wsframe.take(first + rest, 100, lambda payload: None) == (["first"], len(first))


def test_whole_pongs_among_messages_are_noted_and_cut_ones_left() -> None:
    client = _client()
    a, b, pong = bytes(client.send_data("a")), bytes(client.send_data("b")), bytes(client.pong(b"hb"))
    pongs: list[bytes] = []
    assert wsframe.take(a + pong + b + pong, 100, pongs.append) == (["a", "b"], len(a + pong + b + pong))
    assert pongs == [b"hb", b"hb"]
    assert wsframe.take(a + pong[:-1], 100, pongs.append) == (["a"], len(a))  # not all there: left
    assert wsframe.take(pong + a, 100) == ([], 0)  # no one to tell: left to wsproto
    assert pongs == [b"hb", b"hb"]


FRAME = st.one_of(
    st.tuples(st.just("message"), st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=700),
                                            st.binary(max_size=700)), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("ping"), st.binary(max_size=125), st.just(1)),
    st.tuples(st.just("pong"), st.binary(max_size=125), st.just(1)),
    st.tuples(st.just("raw"), st.binary(max_size=12), st.just(1)),  # garbage, or a bad frame
    st.tuples(st.just("bad utf-8"), st.just(b"\xc3("), st.just(1)),
)


def _wire(items: list[tuple[str, object, int]]) -> bytes:
    client = _client()
    wire = bytearray()
    for kind, value, pieces in items:
        if kind == "ping":
            wire += client.ping(value)  # type: ignore[arg-type]
        elif kind == "pong":
            wire += client.pong(value)  # type: ignore[arg-type]
        elif kind == "raw":
            wire += value  # type: ignore[operator]
        elif kind == "bad utf-8":
            wire += _masked(0x81, value)  # type: ignore[arg-type]
        else:
            size = max(1, -(-len(value) // pieces))  # type: ignore[arg-type]
            parts = [value[i:i + size] for i in range(0, len(value), size)] or [value]  # type: ignore[index]
            for n, part in enumerate(parts):
                wire += client.send_data(part, n == len(parts) - 1)  # type: ignore[arg-type]
    return bytes(wire) + bytes(_client().close(4000, "done"))


class _Beat:
    """The heartbeat's side of a socket: the pongs it was told of."""

    def __init__(self) -> None:
        self.pongs: list[bytes] = []

    def pong(self, payload: bytes | bytearray) -> None:
        self.pongs.append(bytes(payload))


async def _read_all(wire: bytes, cuts: list[int]) -> tuple[list[object], int | None, bytes, list[bytes]]:
    """What a socket hands on, how it closed, what it wrote back and the pongs it noted."""
    ours, theirs = trio.testing.memory_stream_pair()
    server = ServerSocket(ours, max_message=500)
    server.beat = beat = _Beat()
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    got: list[object] = []
    code = None
    async with trio.open_nursery() as nursery:
        async def send() -> None:
            for a, b in zip(points, points[1:], strict=False):
                await theirs.send_all(wire[a:b])
            await theirs.send_eof()
        nursery.start_soon(send)
        try:
            while True:
                got.append(await server.get_message())
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
    await ours.aclose()
    back = b""
    while chunk := await theirs.receive_some():
        back += chunk
    return got, code, back, beat.pongs


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(FRAME, max_size=10), st.lists(st.integers(min_value=0), max_size=12))
def test_the_socket_reads_and_answers_any_bytes_as_it_did_through_wsproto_alone(items, cuts):
    wire = _wire(items)

    async def main() -> None:
        fast = await _read_all(wire, cuts)
        real = ws._wsproto_idle
        ws._wsproto_idle = lambda proto: False  # type: ignore[assignment]  # every frame through wsproto
        try:
            slow = await _read_all(wire, cuts)
        finally:
            ws._wsproto_idle = real
        assert fast == slow

    trio.run(main)


async def test_whole_messages_in_one_read_do_not_go_through_wsproto(monkeypatch) -> None:
    fed: list[bytes] = []
    real = Connection.receive_data

    def counting(self: Connection, data: bytes | None) -> None:
        if data:
            fed.append(data)
        real(self, data)

    monkeypatch.setattr(Connection, "receive_data", counting)
    ours, theirs = trio.testing.memory_stream_pair()
    server = ServerSocket(ours, max_message=1000)
    client = _client()
    await theirs.send_all(bytes(client.send_data("one")) + bytes(client.send_data(b"two")))
    assert [await server.get_message(), await server.get_message()] == ["one", b"two"]
    assert fed == []
    await theirs.send_all(bytes(client.ping(b"p")))  # a control frame: wsproto's
    await theirs.send_all(bytes(client.send_data("three")))
    assert await server.get_message() == "three"
    assert len(fed) == 1 and fed[0][0] == 0x89  # from the ping on


async def test_a_socket_that_took_its_messages_keeps_nothing_for_them() -> None:
    """An idle connection is ~9 KB: an emptied container of read messages was another 0.6 KB."""
    ours, theirs = trio.testing.memory_stream_pair()
    server = ServerSocket(ours, max_message=1000)
    client = _client()
    await theirs.send_all(bytes(client.send_data("one")) + bytes(client.send_data("two")))
    assert await server.get_message() == "one"
    assert server._ready is not None
    assert await server.get_message() == "two"
    assert server._ready is None


async def test_a_whole_message_cut_by_the_reads_is_gathered_not_fed_to_wsproto(monkeypatch) -> None:
    """A big desktop result comes in many reads: its frame is gathered and read once it is all here (wsproto
    copied it three times and decoded it in pieces); a frame that is not one to take still goes to wsproto."""
    fed: list[bytes] = []
    real = Connection.receive_data

    def counting(self: Connection, data: bytes | None) -> None:
        if data:
            fed.append(bytes(data))
        real(self, data)

    monkeypatch.setattr(Connection, "receive_data", counting)
    ours, theirs = trio.testing.memory_stream_pair()
    server = ServerSocket(ours, max_message=1 << 20, receive_size=1000)
    client = _client()
    big = '{"x":"' + "é0123456789" * 20000 + '"}'
    wire = bytes(client.send_data("small")) + bytes(client.send_data(big)) + bytes(client.send_data(b"\x00" * 3000))
    for i in range(0, len(wire), 777):
        await theirs.send_all(wire[i:i + 777])
    assert [await server.get_message() for _ in range(3)] == ["small", big, b"\x00" * 3000]
    assert fed == [] and server._gather is None
    cut = bytearray(_masked(0x81, b"\xff" * 100))  # not UTF-8: wsproto's, from its first byte
    await theirs.send_all(bytes(cut[:50]))
    await theirs.send_all(bytes(cut[50:]))
    with pytest.raises(ConnectionClosed) as closed:
        await server.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 1007
    assert fed[0] == bytes(cut)
