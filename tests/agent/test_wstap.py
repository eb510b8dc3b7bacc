"""The stream tap (agent/wstap.py): whole plain text frames from the relay are taken and delivered to a
waiting link in order; every other byte reaches wsproto unchanged, so anything unusual is parsed, answered
and refused as without the tap. Sans-IO first, then through transport.Connection on real loopback sockets,
each scenario run with and without a taker and compared."""

from __future__ import annotations

import random
import struct

import pytest
import trio
import trio.testing
from helpers import accept_websocket
from wsproto.frame_protocol import FrameProtocol, Opcode

from hermes_relay.agent import transport, wstap
from hermes_relay.core.errors import ConnectionLostError
from hermes_relay.core.routes import Route

HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True, rsv: int = 0, mask: bytes | None = None,
          length_bytes: int | None = None) -> bytes:
    """A server's frame, built by hand so that it can be anything (masked, reserved bits, a long length)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    masked = 0x80 if mask is not None else 0
    size = length_bytes if length_bytes is not None else (0 if n < 126 else 2 if n < 1 << 16 else 8)
    if size == 0:
        head = bytes((first, masked | n))
    elif size == 2:
        head = struct.pack("!BBH", first, masked | 126, n)
    else:
        head = struct.pack("!BBQ", first, masked | 127, n)
    if mask is not None:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


class Taker:
    def __init__(self, tap: wstap.Tap, *, accept: bool = True):
        self.got: list[str] = []
        self.accept = accept
        self.is_ready = True
        tap.deliver = self.deliver
        tap.ready = lambda: self.is_ready

    def deliver(self, text: str) -> bool:
        if self.accept:
            self.got.append(text)
        return self.accept


def feed_in_pieces(tap: wstap.Tap, data: bytes, cuts: list[int]) -> bytes:
    out = bytearray()
    at = 0
    for cut in [*sorted(cuts), len(data)]:
        out += tap.feed(data[at:cut]) if cut > at else b""
        at = max(at, cut)
    return bytes(out)


# -- sans-IO ------------------------------------------------------------------------------------------
BIG = ("é✓" * 30_000).encode()  # 150 kB: a 64-bit length
MID = b"m" * 300  # a 16-bit length
PING = frame(b"hi", 0x9)
CLOSE = frame(struct.pack("!H", 1000) + b"bye", 0x8)


def test_without_a_taker_every_byte_reaches_wsproto_at_any_cut() -> None:
    stream = HEAD + frame(b"a") + PING + frame(MID) + frame(b"\x00\x01", 0x2) + frame(BIG) + CLOSE
    rng = random.Random(7)
    for _ in range(200):
        tap = wstap.Tap(1 << 20)
        cuts = rng.sample(range(len(stream)), rng.randint(0, 6))
        assert feed_in_pieces(tap, stream, cuts) == stream
        assert tap.handed == 4 and tap.holding == 0


@pytest.mark.parametrize("cut", range(len(HEAD) + 40))
def test_plain_text_frames_are_taken_in_order_and_the_rest_handed_on_at_any_cut(cut: int) -> None:
    stream = HEAD + frame(b"a") + PING + frame("é".encode()) + frame(MID) + frame(BIG) + frame(b"")
    tap = wstap.Tap(1 << 20)
    taker = Taker(tap)
    out = feed_in_pieces(tap, stream, [cut, cut + 3, len(stream) - 5])
    assert taker.got == ["a", "é", MID.decode(), BIG.decode(), ""]
    assert out == HEAD + PING  # the upgrade's answer and the ping: wsproto's
    assert tap.handed == 0 and tap.holding == 0


def test_the_upgrades_answer_is_never_taken_for_a_frame_even_cut_inside_its_end() -> None:
    body = frame(b"x")
    for cut in range(len(HEAD) - 4, len(HEAD) + 1):
        tap = wstap.Tap(1 << 20)
        taker = Taker(tap)
        assert tap.feed(HEAD[:cut]) == HEAD[:cut]
        assert tap.feed(HEAD[cut:] + body) == HEAD[cut:]
        assert taker.got == ["x"]


@pytest.mark.parametrize("odd", [
    frame(b"masked", mask=b"\x01\x02\x03\x04"),
    frame(b"deflated", rsv=0x40),
    frame(b"short but long-encoded", length_bytes=2),
    frame(MID, length_bytes=8),
    frame(b"\xff\xfe not UTF-8"),
    frame(b"\xed\xa0\x80 an encoded surrogate"),
    frame(b"x" * 2000),  # over the cap below
    frame(b"binary", 0x2),
], ids=["masked", "rsv1", "long-16", "long-64", "bad-utf8", "surrogate", "too-big", "binary"])
def test_a_frame_that_is_not_plain_goes_to_wsproto_unchanged(odd: bytes) -> None:
    tap = wstap.Tap(1000)
    taker = Taker(tap)
    tap.feed(HEAD)
    assert tap.feed(odd) == odd
    assert taker.got == []


def test_a_fragmented_message_is_wsprotos_and_nothing_after_a_handed_message_overtakes_it() -> None:
    tap = wstap.Tap(1 << 20)
    taker = Taker(tap)
    tap.feed(HEAD)
    first, ping, last = frame(b"one ", fin=False), PING, frame(b"piece", 0x0)
    assert tap.feed(first + ping) == first + ping  # a ping inside the fragments: wsproto's, in place
    assert tap.feed(frame(b"mid", 0x0, fin=False)) == frame(b"mid", 0x0, fin=False)
    after = frame(b"after")
    assert tap.feed(last + after) == last + after  # behind the handed message in the same read: handed on
    assert tap.handed == 2 and taker.got == []
    binary = frame(b"b", 0x2)
    assert tap.feed(binary + frame(b"t")) == binary + frame(b"t")
    assert tap.handed == 4
    assert tap.feed(frame(b"next read")) == b""  # (the taker's ready() said everything reached it)
    assert taker.got == ["next read"]


def test_nothing_is_taken_while_the_link_is_not_waiting_or_a_handed_message_has_not_reached_it() -> None:
    tap = wstap.Tap(1 << 20)
    taker = Taker(tap)
    tap.feed(HEAD)
    taker.is_ready = False
    assert tap.feed(frame(b"a")) == frame(b"a")
    taker.is_ready = True
    big = frame(BIG)
    assert tap.feed(big[:1000]) == b""  # gathered: ready when it began
    taker.is_ready = False
    assert tap.feed(big[1000:]) == big  # not ready when whole: all of it is wsproto's after all
    assert taker.got == [] and tap.handed == 2


def test_a_declined_message_is_handed_on_whole_and_counted() -> None:
    tap = wstap.Tap(1 << 20)
    taker = Taker(tap, accept=False)
    tap.feed(HEAD)
    assert tap.feed(frame(b"alone")) == frame(b"alone")
    assert taker.got == [] and tap.handed == 1
    both = frame(b"system") + frame(b"then")
    assert tap.feed(both) == both  # the second is behind a handed message
    assert tap.handed == 3


def test_at_the_end_of_the_stream_what_was_kept_back_goes_to_wsproto() -> None:
    tap = wstap.Tap(1 << 20)
    Taker(tap)
    tap.feed(HEAD)
    cut = frame(BIG)[:5000]
    assert tap.feed(cut) == b""
    assert tap.holding == 5000
    assert tap.release() == cut and tap.holding == 0


# -- through transport.Connection and trio-websocket, real loopback sockets ---------------------------
async def _raw_relay(frames: list[bytes], received: list[Opcode], *, task_status: trio.TaskStatus[int]) -> None:
    """A relay that answers the upgrade and, once the agent says it reads, writes ``frames`` in random
    pieces (headers and payloads cut everywhere), noting what the agent sends (its pongs, its close)
    until it hangs up."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0] as listener:
        task_status.started(listener.socket.getsockname()[1])
        stream, answer = await accept_websocket(listener)
        await stream.send_all(answer.reply)
        parser = FrameProtocol(client=False, extensions=[])
        sent = False
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            parser.receive_bytes(chunk)
            for f in parser.received_frames():
                received.append(f.opcode)
                if f.opcode == Opcode.TEXT and f.payload == "reading" and not sent:
                    sent = True
                    data = b"".join(frames)
                    rng = random.Random(len(data))
                    at = 0
                    while at < len(data):
                        size = rng.choice([1, 2, 7, 100, 5000, 70000])
                        try:
                            await stream.send_all(data[at:at + size])
                        except trio.BrokenResourceError:  # the agent gave up on a frame it refuses
                            break
                        at += size
                        await trio.sleep(0)
                    if not frames[-1] or frames[-1][0] & 0x0F != 0x8:  # no close at the end: the relay just goes
                        await stream.aclose()
                        return
        await stream.aclose()


async def _run(frames: list[bytes], *, take: bool) -> tuple[list[str | bytes], int | None, list[Opcode], int]:
    """What the link sees of ``frames``: the messages in order (taken or read), how the connection ended,
    the opcodes the agent sent back, and how many messages the tap took."""
    received: list[Opcode] = []
    messages: list[str | bytes] = []
    taken = 0

    def deliver(text: str) -> bool:
        nonlocal taken
        taken += 1
        messages.append(text)
        return True

    code: int | None = None
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_raw_relay, frames, received)
            dialed = await transport.dial(Route(0, 0, "lan", f"ws://127.0.0.1:{port}"), expected_pin=None)
            conn = await transport.open_websocket(nursery, dialed, timeout=5)
            conn.deliver_to(deliver if take else None)
            await conn.send_text("reading")  # no pass of the scheduler before get_message waits
            try:
                while True:
                    messages.append(await conn.get_message())
            except ConnectionLostError as exc:
                code = transport.close_code(exc)
            await conn.aclose()
    return messages, code, received, taken


PLAIN = [frame(b"hello"), frame("é✓😀".encode()), frame(MID), frame(BIG), frame(b"")]


@pytest.mark.parametrize("name,frames", [
    ("plain", [*PLAIN, CLOSE]),
    ("control frames between", [frame(b"a"), PING, frame(b"b"), frame(b"p", 0xA), frame(b"c"), CLOSE]),
    ("fragments and binary", [frame(b"a"), frame(b"f1 ", fin=False), PING, frame(b"f2", 0x0), frame(b"b"),
                              frame(b"\x00bin", 0x2), frame(BIG), CLOSE]),
    ("invalid UTF-8", [frame(b"a"), frame(b"\xc3\x28 bad"), frame(b"never")]),
    ("masked by the relay", [frame(b"a"), frame(b"masked", mask=b"abcd"), frame(b"never")]),
    ("reserved bit", [frame(b"a"), frame(b"rsv", rsv=0x20), frame(b"never")]),
    ("long-encoded length", [frame(b"a"), frame(b"long", length_bytes=8), frame(b"never")]),
    ("too big", [frame(b"a"), frame(b"x" * (5 << 20)), frame(b"never")]),
    ("cut by the end", [frame(b"a"), frame(BIG)[:3000]]),
])
async def test_the_link_sees_the_same_with_and_without_the_tap(name: str, frames: list[bytes]) -> None:
    without = await _run(frames, take=False)
    with_tap = await _run(frames, take=True)
    assert without[3] == 0
    assert with_tap[:3] == without[:3]
    if name in ("plain", "control frames between", "fragments and binary"):
        assert with_tap[3] > 0  # the tap did take messages here
        assert without[1] == 1000 and Opcode.CLOSE in without[2]
    if name == "control frames between":
        assert Opcode.PONG in without[2]  # the relay's ping was answered either way


async def test_a_message_handed_on_keeps_later_ones_from_being_taken_until_get_message_returned_it() -> None:
    """The window no socket test can hold open: trio-websocket has handed a message to the task waiting in
    get_message, which has not run yet. The next plain frame must not be taken before it."""
    queue_in, queue_out = trio.open_memory_channel[str | bytes](1)

    class Ws:  # the part of trio-websocket a Connection reads from
        closed = None

        async def get_message(self) -> str | bytes:
            return await queue_out.receive()

    stream = transport._WatchedStream(trio.testing.MemorySendStream())  # type: ignore[arg-type]
    conn = transport.Connection(None, Ws(), stream)  # type: ignore[arg-type]
    taken: list[str] = []
    conn.deliver_to(lambda text: taken.append(text) is None)
    got: list[str | bytes] = []
    tap = stream.tap
    assert tap.feed(HEAD) == HEAD
    assert tap.feed(frame(b"nobody waits")) == frame(b"nobody waits")
    async with trio.open_nursery() as nursery:
        async def read() -> None:
            while True:
                got.append(await conn.get_message())

        queue_in.send_nowait("nobody waits")
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["nobody waits"]
        assert tap.feed(frame(b"taken")) == b""  # the reader waits, nothing is on its way: taken
        binary = frame(b"bin", 0x2)
        assert tap.feed(binary) == binary
        queue_in.send_nowait(b"bin")  # on its way to the reader, which still waits in get_message
        assert tap.feed(frame(b"behind it")) == frame(b"behind it")
        queue_in.send_nowait("behind it")
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["nobody waits", b"bin", "behind it"]
        assert tap.feed(frame(b"taken again")) == b""
        nursery.cancel_scope.cancel()
    assert taken == ["taken", "taken again"]
    conn.deliver_to(None)
    assert tap.feed(frame(b"no taker")) == frame(b"no taker")
