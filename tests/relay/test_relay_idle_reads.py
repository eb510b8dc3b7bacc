"""A quiet authenticated connection waits with the relay's idle reader (relay/idleread.py): its heartbeat
pongs are read without waking its task, and whatever else comes (a message, a pong and a message in one
read, a frame cut in two, a close, a hang-up, a revocation) reaches the connection as before.

The client is driven by hand (wsproto over a bare TCP stream), so the test decides what bytes go out in
which write; the relay's loopback-only ``GET /relay/info`` counts the pongs the idle reader read and the
reads it handed back to a connection's task.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from helpers import RawWsClient, http_json, register_code, until
from wsproto.events import CloseConnection, Ping, TextMessage

from hermes_relay.relay import wsframe

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the idle reader is epoll's (Linux)")

HB = 0.25  # seconds: the relay pings this often, and waits as long for the pong (a stall of the test
# between reading a ping and answering it must stay below this)
QUIET = 30.0  # a heartbeat that never comes within a test: only the client's own bytes reach the socket
PING = json.dumps({"channel": "system", "type": "ping", "id": "p1", "payload": {"ts": 1}})


async def idle_reads(relay: Any) -> dict[str, int]:
    status, info = await http_json("GET", f"{relay.http}/relay/info")
    assert status == 200
    return dict(info["idle_reads"])


async def connections(relay: Any) -> int:
    status, health = await http_json("GET", f"{relay.http}/health")
    assert status == 200
    return int(health["connections"])


@asynccontextmanager
async def quiet_client(relay_factory: Any, heartbeat: float) -> AsyncIterator[tuple[Any, RawWsClient, str]]:
    """A relay and an authenticated client that has said nothing since (relay, client, session token)."""
    relay = await relay_factory(heartbeat=heartbeat)
    code = await register_code(relay.http)
    client = await RawWsClient.connect(relay)
    try:
        reply = await client.authenticate({"pairing_code": code})
        assert reply["type"] == "auth.ok"
        yield relay, client, reply["payload"]["session_token"]
    finally:
        await client.aclose()


async def answer_pings(client: RawWsClient, n: int) -> None:
    for _ in range(n):
        event = await client.next_event()
        assert isinstance(event, Ping), event
        await client.stream.send_all(client.conn.send(event.response()))


async def next_message(client: RawWsClient) -> dict[str, Any]:
    """The relay's next text message (pings on the way answered)."""
    while True:
        event = await client.next_event()
        if isinstance(event, Ping):
            await client.stream.send_all(client.conn.send(event.response()))
            continue
        assert isinstance(event, TextMessage), event
        return dict(json.loads(event.data))


async def test_a_quiet_connections_pongs_are_read_without_waking_its_task(relay_factory):
    async with quiet_client(relay_factory, HB) as (relay, client, _):
        await answer_pings(client, 3)
        reads = await until(lambda: _at_least(relay, "pongs", 3))
        assert reads["woken"] == 0 and reads["parked"] == 1  # its task never ran for them

        await client.send_text(PING)  # a message wakes it, and is answered
        assert (await next_message(client))["type"] == "pong"
        assert (await idle_reads(relay))["woken"] == 1

        # Busy for one read (the next pong wakes its task), then quiet again: the idle reader reads the rest.
        await answer_pings(client, 4)
        await until(lambda: _at_least(relay, "pongs", 6))
        assert await connections(relay) == 1


async def test_a_pong_and_a_message_in_one_read_are_both_taken(relay_factory):
    async with quiet_client(relay_factory, HB) as (relay, client, _):
        ping = await client.next_event()
        assert isinstance(ping, Ping)
        await client.stream.send_all(client.conn.send(ping.response()) + client.conn.send(TextMessage(PING)))
        assert (await next_message(client))["type"] == "pong"
        # The pong was noted: the relay pings again instead of timing the connection out.
        await answer_pings(client, 2)
        assert await connections(relay) == 1
        assert (await idle_reads(relay))["woken"] >= 1


async def test_a_message_cut_in_two_reaches_a_quiet_connection(relay_factory):
    async with quiet_client(relay_factory, QUIET) as (relay, client, _):
        frame = client.conn.send(TextMessage(PING))
        await client.stream.send_all(frame[:5])
        await until(lambda: _at_least(relay, "woken", 1))  # the first five bytes were handed to its task
        await client.stream.send_all(frame[5:])
        assert (await next_message(client))["type"] == "pong"


async def test_a_pong_cut_in_two_is_still_a_pong(relay_factory):
    async with quiet_client(relay_factory, HB) as (relay, client, _):
        ping = await client.next_event()
        assert isinstance(ping, Ping)
        pong = client.conn.send(ping.response())
        await client.stream.send_all(pong[:3])
        await until(lambda: _at_least(relay, "woken", 1))  # not a whole pong: its task read on
        await client.stream.send_all(pong[3:])
        await answer_pings(client, 2)  # noted: pinged again, not timed out
        assert await connections(relay) == 1


async def test_a_quiet_connection_that_hangs_up_is_gone_at_once(relay_factory):
    async with quiet_client(relay_factory, QUIET) as (relay, client, _):
        assert await connections(relay) == 1
        await client.aclose()  # no close frame: the end of the stream, seen long before any heartbeat
        with trio.fail_after(5):
            await until(lambda: _connections_are(relay, 0))


async def test_a_quiet_connection_answers_a_close_frame(relay_factory):
    async with quiet_client(relay_factory, QUIET) as (relay, client, _):
        await client.stream.send_all(client.conn.send(CloseConnection(code=1000, reason="bye")))
        event = await client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1000
        with trio.fail_after(5):
            await until(lambda: _connections_are(relay, 0))


async def test_revoking_a_quiet_connections_session_closes_it(relay_factory):
    async with quiet_client(relay_factory, QUIET) as (relay, client, token):
        status, _ = await http_json("DELETE", f"{relay.http}/sessions/{token[:8]}")
        assert status == 200
        with trio.fail_after(5):
            event = await client.next_event()
        assert isinstance(event, CloseConnection), event
        with trio.fail_after(5):
            await until(lambda: _connections_are(relay, 0))


async def _at_least(relay: Any, key: str, n: int) -> dict[str, int] | None:
    reads = await idle_reads(relay)
    return reads if reads[key] >= n else None


async def _connections_are(relay: Any, n: int) -> bool:
    return await connections(relay) == n


# -- wsframe.pongs: the idle reader's one question -----------------------------------------------------

def _masked_pong(payload: bytes, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x8A, 0x80 | len(payload))) + key + masked


def test_whole_masked_pongs_are_read_with_their_payloads():
    assert wsframe.pongs(_masked_pong(b"hb")) == [b"hb"]
    assert wsframe.pongs(_masked_pong(b"hb") + _masked_pong(b"") + _masked_pong(b"x" * 125)) == [b"hb", b"", b"x" * 125]


@pytest.mark.parametrize("data", [
    b"",
    _masked_pong(b"hb")[:-1],  # cut short
    _masked_pong(b"hb") + _masked_pong(b"hb")[:3],  # a whole one, then part of the next
    _masked_pong(b"hb") + bytes((0x81, 0x80)) + b"\x00" * 4,  # a text frame behind it
    bytes((0x8A, 0x02)) + b"hb",  # unmasked
    bytes((0x0A, 0x80)) + b"\x00" * 4,  # not final
    bytes((0xCA, 0x80)) + b"\x00" * 4,  # a reserved bit
    bytes((0x8A, 0xFE, 0x00, 0x7E)) + b"\x00" * 130,  # a length a control frame may not have
    bytes((0x89, 0x80)) + b"\x00" * 4,  # a ping
    bytes((0x88, 0x82)) + b"\x00" * 4 + b"\x03\xe8",  # a close
])
def test_anything_but_whole_masked_pongs_is_not_read_as_pongs(data):
    assert wsframe.pongs(data) is None
