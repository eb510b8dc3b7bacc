"""The relay's HTTP parse (relay/httpparse.py, httptools) accepts and refuses what h11 did, and its answers
(relay/http.py) are h11's bytes, written at once.

The parser is fed real request bytes, whole and a byte at a time; the relay-level tests use real loopback
sockets.
"""

from __future__ import annotations

import os
import socket

import h11
import pytest
import trio
import trio.testing
from helpers import accepted_pair, parse_response, raw_http

from hermes_relay.relay import http
from hermes_relay.relay.conn import Relay
from hermes_relay.relay.httpmsg import MAX_HEAD, BadRequest
from hermes_relay.relay.httpparse import RequestParse
from hermes_relay.relay.server import RelayConfig


def _parse(data: bytes, piece: int | None = None) -> RequestParse:
    """``data`` fed whole, or ``piece`` bytes at a time."""
    parse = RequestParse()
    step = piece or max(len(data), 1)
    for i in range(0, len(data), step):
        parse.feed(data[i:i + step])
    return parse


def _status(data: bytes, piece: int | None = None) -> int:
    try:
        parse = _parse(data, piece)
    except BadRequest as exc:
        return exc.status
    return 200 if parse.head_done else 0


def _h11_status(data: bytes) -> int:
    """What h11 (the relay's parser before) made of the same head."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return exc.error_status_hint
    return 200 if isinstance(event, h11.Request) else 0


HEADS = [
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\nHost: x\n\n",  # bare line feeds
    b"GET /health HTTP/1.0\r\n\r\n",  # HTTP/1.0 needs no Host
    b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # a TLS hello
    b"HELLO THERE\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD - 36) + b"\r\n\r\n",  # MAX_HEAD bytes exactly
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD - 35) + b"\r\n\r\n",  # one more
]


# Where llhttp differs from h11, on the side RFC 9112 allows: an empty line before the request line is
# ignored (§2.2: a server SHOULD), a header folded onto a second line is refused (§5.2: 400 or unfold).
DIFFERENT = [
    (b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n", 400, 200),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: folded\r\n line\r\n\r\n", 200, 400),
]


@pytest.mark.parametrize("head,h11_status,status", DIFFERENT)
def test_where_the_parse_differs_from_h11_it_is_as_the_rfc_allows(head: bytes, h11_status: int, status: int) -> None:
    assert _h11_status(head) == h11_status
    assert _status(head) == _status(head, 1) == status


@pytest.mark.parametrize("head", HEADS, ids=range(len(HEADS)))
def test_a_head_is_accepted_or_refused_as_h11_did(head: bytes) -> None:
    expected = 431 if len(head) > MAX_HEAD else _h11_status(head)  # h11 counted only what it held unparsed
    assert expected != 0
    assert _status(head) == expected
    assert _status(head, 1) == expected  # the same a byte at a time
    if len(head) == MAX_HEAD:
        assert expected == 200


def test_headers_are_lower_cased_and_trimmed_and_the_last_of_a_name_wins() -> None:
    parse = _parse(b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:8767 \r\nX-One:\t a b \t\r\nx-one: c\r\n\r\n")
    assert (parse.method, parse.target) == ("GET", "/x?y=1")
    assert parse.headers == {"host": "127.0.0.1:8767", "x-one": "c"}
    assert parse.complete and not parse.upgraded


@pytest.mark.parametrize("piece", [None, 1, 7])
def test_bodies_come_whole_however_they_are_framed_and_whatever_follows_them(piece: int | None) -> None:
    sized = _parse(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                   b"GET /next HTTP/1.1\r\nHost: y\r\n\r\nJUNK JUNK\r\n\r\n", piece)
    assert sized.complete and sized.take_body() == b"hello" and sized.headers["host"] == "x"
    chunked = _parse(b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\nJUNK\r\n\r\n", piece)
    assert chunked.complete and chunked.take_body() == b"hello"
    # Another protocol's upgrade is answered as plain HTTP: its body is read (llhttp stops at its head)
    h2c = _parse(b"POST /p HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                 b"Content-Length: 5\r\n\r\nhelloJUNK", piece)
    assert h2c.complete and h2c.take_body() == b"hello"


def test_a_body_is_not_complete_until_all_of_it_came() -> None:
    parse = _parse(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
    assert parse.head_done and not parse.complete and parse.body_size == 3
    parse.feed(b"lo")
    assert parse.complete and parse.take_body() == b"hello"


@pytest.mark.parametrize("piece", [None, 1])
def test_what_follows_a_websocket_upgrade_head_is_kept_for_the_socket(piece: int | None) -> None:
    head = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    parse = _parse(head + b"\x81\x85FRAME", piece)
    assert parse.upgraded and parse.complete and parse.trailing == b"\x81\x85FRAME" and not parse.has_body()
    with_body = _parse(head.replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\n") + b"hi", piece)
    assert with_body.upgraded and with_body.has_body()  # relay/upgrade.py refuses it


@pytest.mark.parametrize("status,extra", [
    (200, []), (400, []), (404, []), (413, []), (431, []), (502, []), (504, []), (599, []),
    (503, [(b"retry-after", b"1")]), (426, [(b"sec-websocket-version", b"13")]),
])
def test_an_answer_head_is_the_one_h11_wrote(status: int, extra: list[tuple[bytes, bytes]]) -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"17"), (b"connection", b"close"),
               (b"cache-control", b"no-store"), *extra]
    reason = http._REASONS.get(status, b"")
    expected = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
    assert http.response_head(status, b"application/json", 17, extra) == expected


class _CountingSocket(socket.socket):  # put under a trio socket: trio wraps only a plain socket.socket
    """A socket that counts its writes."""

    writes = 0

    def send(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.writes += 1
        return super().send(*args, **kwargs)

    def sendmsg(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.writes += 1
        return super().sendmsg(*args, **kwargs)


async def test_an_answer_in_pieces_goes_out_in_one_write_with_its_head() -> None:
    a, b = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    counting = _CountingSocket(fileno=os.dup(a.fileno()))
    counting.setblocking(False)
    stream.socket._sock = counting  # type: ignore[attr-defined]  # the same connection, its writes counted
    body = [b'{"ok":true,', memoryview(b'"result":"' + b"x" * 3000 + b'"'), b"}"]
    try:
        await http.send_response(stream, 200, body, b"application/json")
    finally:
        counting.close()
        a.close()
    received = b""
    while chunk := b.recv(65536):
        received += chunk
    b.close()
    status, headers, got = parse_response(received)
    assert (status, got) == (200, b"".join(bytes(p) for p in body))
    assert counting.writes == 1


async def test_a_plain_request_is_read_and_answered_without_a_pass_through_the_scheduler() -> None:
    """trio's stream methods yield to the scheduler after every read and write, even one that did not
    wait: a pass each, of the few a whole request needs."""
    relay = Relay(RelayConfig())
    client, ours = await accepted_pair(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # there to read

    me = trio.lowlevel.current_task()

    class Steps(trio.abc.Instrument):
        count = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task is me:
                self.count += 1

    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        await relay.handle_stream(ours)
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert steps.count == 0
    answer = b""
    while chunk := await client.receive_some():
        answer += chunk
    await client.aclose()
    assert parse_response(answer)[0] == 200


async def test_a_post_with_an_upgrade_to_another_protocol_is_answered_with_its_body_read(relay) -> None:
    body = b'{"code": "ABCDEF"}'
    data = (b"POST /pairing/register HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    status, _, answer = parse_response(await raw_http(relay.http, data))
    assert status == 200 and b'"ok":true' in answer


async def test_connections_waiting_to_be_accepted_are_taken_in_one_go() -> None:
    """trio's accept goes through the scheduler after each connection, even with more waiting."""
    from hermes_relay.relay import server

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
    handled: list[trio.abc.Stream] = []

    async def handle(stream: trio.abc.Stream) -> None:
        handled.append(stream)

    steps: list[str] = []

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task.name.endswith("_accept"):
                steps.append(task.name)

    instrument = Steps()
    async with trio.open_nursery() as nursery:
        trio.lowlevel.add_instrument(instrument)
        try:
            nursery.start_soon(server._accept, listener, nursery, handle)
            while len(handled) < 5:
                await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(instrument)
        nursery.cancel_scope.cancel()
    assert len(steps) == 1  # took all five, then waited
    for stream in [*handled, *clients]:
        await stream.aclose()


async def test_a_parse_is_freed_as_soon_as_its_request_is_done_with(relay) -> None:
    """The parser and the object it calls back form a cycle: left to the collector, every connection's
    parse would wait for a collection (and the relay freezes what survives one: relay/gcpolicy.py)."""
    import gc

    from helpers import http_json, pair

    gc.collect()
    gc.disable()
    try:
        ws, _ = await pair(relay.url, relay.http)
        assert (await http_json("GET", f"{relay.http}/health"))[0] == 200
        assert parse_response(await raw_http(relay.http, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"))[0] == 400
        assert parse_response(await raw_http(relay.http, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD))[0] == 431
        assert [o for o in gc.get_objects() if isinstance(o, RequestParse)] == []
    finally:
        gc.enable()
    await ws.aclose()
