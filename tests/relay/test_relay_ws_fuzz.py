"""relay/ws.py against any sequence of frames a client may send, cut into any pieces on the wire: every
message arrives whole and in order (text with any code point, binary with any byte), every ping is
answered with its own payload, and a message over the limit or an invalid frame closes the socket with
the RFC's code, never with an exception of another kind.

The client side is wsproto's own frame encoder (masked, as a browser's); trio's memory streams carry
the bytes in the pieces hypothesis chose.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Pong
from wsproto.frame_protocol import FrameProtocol

from hermes_relay.relay.ws import ConnectionClosed, ServerSocket

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)  # str frames are UTF-8: no lone surrogates
MESSAGE = st.one_of(TEXT, st.binary(max_size=300))
ITEM = st.one_of(
    st.tuples(st.just("message"), MESSAGE, st.integers(min_value=1, max_value=4)),  # sent in this many frames
    st.tuples(st.just("ping"), st.binary(max_size=125), st.just(1)),
)


def _frames(items: list[tuple[str, object, int]]) -> bytes:
    client = FrameProtocol(client=True, extensions=[])
    wire = bytearray()
    for kind, value, pieces in items:
        if kind == "ping":
            wire += client.ping(value)  # type: ignore[arg-type]
            continue
        size = max(1, -(-len(value) // pieces))  # type: ignore[arg-type]
        parts = [value[i:i + size] for i in range(0, len(value), size)] or [value]  # type: ignore[index]
        for n, part in enumerate(parts):
            wire += client.send_data(part, n == len(parts) - 1)  # type: ignore[arg-type]
    return bytes(wire)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(ITEM, max_size=12), st.lists(st.integers(min_value=0), max_size=20))
def test_any_frames_in_any_pieces_arrive_whole_in_order_and_pings_are_answered(items, cuts):
    expected = [value for kind, value, _ in items if kind == "message"]
    pings = [value for kind, value, _ in items if kind == "ping"]

    async def main() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        server = ServerSocket(ours, max_message=1 << 20)
        wire = _frames(items) + bytes(FrameProtocol(client=True, extensions=[]).close(4000, "done"))
        got: list[object] = []
        async with trio.open_nursery() as nursery:
            async def send() -> None:
                for piece in _cut(wire, cuts):
                    await theirs.send_all(piece)
            nursery.start_soon(send)
            try:
                while True:
                    got.append(await server.get_message())
            except ConnectionClosed as exc:
                assert exc.reason is not None and exc.reason.code == 4000
        assert got == expected
        client = Connection(ConnectionType.CLIENT)
        client.receive_data(await _drain(server, theirs))
        answers = list(client.events())
        assert [bytes(e.payload) for e in answers if isinstance(e, Pong)] == [bytes(p) for p in pings]
        assert isinstance(answers[-1], CloseConnection) and answers[-1].code == 4000  # our answer to its close

    trio.run(main)


async def _drain(server: ServerSocket, stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server wrote, once it is done (its end closed, as relay/conn.py does)."""
    await server.stream.aclose()
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.binary(min_size=1, max_size=64))
def test_garbage_after_the_upgrade_closes_with_a_protocol_code_and_nothing_else(garbage):
    async def main() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        server = ServerSocket(ours, max_message=1 << 16)
        await theirs.send_all(garbage)
        await theirs.send_eof()
        with trio.fail_after(5):
            try:
                while True:
                    await server.get_message()
            except ConnectionClosed as exc:  # and no other exception, and no hang
                assert exc.reason is not None and isinstance(exc.reason.code, int)

    trio.run(main)


def test_a_message_over_the_limit_in_small_frames_is_refused_before_it_is_whole():
    async def main() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        server = ServerSocket(ours, max_message=1000)
        client = FrameProtocol(client=True, extensions=[])
        await theirs.send_all(b"".join(bytes(client.send_data("x" * 100, False)) for _ in range(11)))
        try:
            await server.get_message()
        except ConnectionClosed as exc:
            assert exc.reason is not None and exc.reason.code == 1009
        else:
            raise AssertionError("a message over the limit was handed on")
        events = list(_events(await _drain(server, theirs)))
        assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009

    trio.run(main)


def _events(data: bytes):
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return client.events()


def test_text_ping_order_is_kept_when_a_ping_comes_between_the_pieces_of_a_message():
    async def main() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        server = ServerSocket(ours, max_message=1000)
        client = FrameProtocol(client=True, extensions=[])
        wire = bytes(client.send_data("first half ", False)) + bytes(client.ping(b"p")) + \
            bytes(client.send_data("second half", True))
        await theirs.send_all(wire)
        assert await server.get_message() == "first half second half"
        assert [type(e) for e in _events(await _drain(server, theirs))] == [Pong]

    trio.run(main)
