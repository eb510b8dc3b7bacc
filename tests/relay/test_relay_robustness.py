"""Malformed, oversized and slow input: each failure is contained to its own connection.

Timeouts are made small through RelayConfig (head_timeout, auth_timeout) and run on the real clock,
because these tests use real sockets; the assertions never depend on how long a sleep took.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket
from helpers import (
    auth_frame,
    expect_closed,
    http_json,
    open_stream,
    pair,
    parse_response,
    raw_http,
    read_to_eof,
    receive_json,
    register_code,
    send_json,
    ws_auth,
    ws_connect,
)

from hermes_relay.core.wire import MAX_WS_MESSAGE
from hermes_relay.relay.core import RelayCore
from hermes_relay.relay.http import MAX_HEAD
from hermes_relay.relay.server import (
    AUTH_TIMEOUT_REASON,
    BUSY_BODY,
    BUSY_PER_IP_BODY,
    CLOSE_POLICY,
    MAX_MESSAGE,
    MAX_UNAUTHED_PER_IP,
    RelayConfig,
)

TINY_TIMEOUT = 0.2  # seconds; short enough for the suite, long enough for loopback round trips


async def assert_still_serving(relay) -> None:
    status, _ = await http_json("GET", f"{relay.http}/health")
    assert status == 200
    await pair(relay.url, relay.http)


# -- the first WebSocket frame ---------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    "not json at all",
    "[1, 2, 3]",
    '"a string"',
    '{"type": "auth", "payload": {}}',
    '{"channel": "system", "type": "auth", "payload": [1]}',
    b"\xff\xfe\x00 not utf-8",
])
async def test_malformed_first_frame_gets_auth_fail_and_a_close(relay, frame):
    ws = await ws_connect(relay.url)
    await ws.send_message(frame)
    reply = await receive_json(ws)
    assert (reply["channel"], reply["type"]) == ("system", "auth.fail")
    assert reply["payload"]["reason"].startswith("Malformed auth frame")
    assert (await expect_closed(ws)).code == CLOSE_POLICY
    await assert_still_serving(relay)


@pytest.mark.parametrize("channel,typ", [("chat", "message"), ("system", "ping"), ("system", "auth.ok")])
async def test_first_frame_that_is_not_system_auth_is_refused(relay, channel, typ):
    ws = await ws_connect(relay.url)
    await send_json(ws, channel, typ, {"pairing_code": "ABCDEF"})
    reply = await receive_json(ws)
    assert reply["type"] == "auth.fail"
    assert reply["payload"] == {"reason": "First message must be system/auth"}
    assert (await expect_closed(ws)).code == CLOSE_POLICY


def test_message_limit_is_64_kib():
    # Only system messages travel here; a bigger limit lets unauthenticated sockets pin memory.
    assert MAX_MESSAGE == 64 * 1024


@pytest.mark.parametrize("when", ["before_auth", "after_auth"])
async def test_frame_over_the_message_limit_closes_that_connection_only(relay, when):
    _, bystander = await pair(relay.url, relay.http)
    bystander_ws, _ = await ws_auth(relay.url, {"session_token": bystander["session_token"]})
    if when == "after_auth":
        ws, _ = await pair(relay.url, relay.http)
    else:
        ws = await ws_connect(relay.url)

    limit = MAX_WS_MESSAGE if when == "after_auth" else MAX_MESSAGE  # desktop results need 4 MiB after auth
    with pytest.raises(trio_websocket.ConnectionClosed):
        await ws.send_message("x" * (limit + 1))
        await ws.get_message()
    assert ws.closed is not None and ws.closed.code == 1009  # RFC 6455: message too big

    ping_id = await send_json(bystander_ws, "system", "ping", {"ts": 1})
    pong = await receive_json(bystander_ws)
    assert (pong["type"], pong["id"]) == ("pong", ping_id)
    await assert_still_serving(relay)


async def test_frame_just_under_the_message_limit_is_accepted(relay):
    ws, _ = await pair(relay.url, relay.http)
    padding = "x" * (MAX_MESSAGE - 200)
    message = json.dumps({"channel": "system", "type": "ping", "id": "big", "payload": {"pad": padding}})
    assert len(message) <= MAX_MESSAGE
    await ws.send_message(message)
    reply = await receive_json(ws)
    assert (reply["type"], reply["id"]) == ("pong", "big")


# -- after authentication --------------------------------------------------------------------------

async def test_authenticated_connection_answers_ping_and_reports_bad_frames_without_closing(relay):
    ws, _ = await pair(relay.url, relay.http)

    ping_id = await send_json(ws, "system", "ping", {"ts": 1234})
    assert await receive_json(ws) == {"channel": "system", "type": "pong", "id": ping_id, "payload": {"ts": 1234}}

    await ws.send_message("{broken")
    reply = await receive_json(ws)
    assert reply["type"] == "error" and reply["payload"]["reason"].startswith("malformed message")

    auth_id = await send_json(ws, "system", "auth", {"pairing_code": "ABCDEF"})
    reply = await receive_json(ws)
    assert (reply["type"], reply["id"], reply["payload"]) == ("error", auth_id, {"reason": "already authenticated"})

    other_id = await send_json(ws, "bridge", "message", {"text": "hi"})
    reply = await receive_json(ws)
    assert (reply["type"], reply["id"], reply["payload"]["channel"]) == ("error", other_id, "bridge")
    assert reply["payload"]["message"] == "Unknown channel: bridge"

    await send_json(ws, "system", "ping", {"ts": 5})
    assert (await receive_json(ws))["type"] == "pong"


# -- HTTP level ------------------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    b"HELLO THERE\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
])
async def test_garbage_instead_of_http_gets_400_and_the_relay_keeps_serving(relay, garbage):
    status, _, body = parse_response(await raw_http(relay.http, garbage))
    assert status == 400
    assert json.loads(body)["ok"] is False
    await assert_still_serving(relay)


async def test_oversized_request_head_gets_431(relay):
    # One byte past the limit and no more: the relay reads everything we sent before it answers,
    # so closing cannot turn into a TCP reset that would swallow the response.
    start = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
    head = start + b"a" * (MAX_HEAD + 1 - len(start))
    status, _, _ = parse_response(await raw_http(relay.http, head))
    assert status == 431
    await assert_still_serving(relay)


async def test_websocket_upgrade_on_an_unknown_path_is_404(relay):
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        await ws_connect(f"{relay.url}/elsewhere")
    assert info.value.status_code == 404


async def test_websocket_is_served_on_slash_ws_too(relay):
    _, ok = await pair(f"{relay.url}/ws", relay.http)
    assert ok["session_token"]


async def test_client_that_connects_and_hangs_up_does_not_disturb_the_relay(relay):
    for data in (b"", b"GET / HTTP/1.1\r\nUpgr"):
        stream = await open_stream(relay.http)
        if data:
            await stream.send_all(data)
        await stream.aclose()
    await assert_still_serving(relay)


# -- timeouts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("partial", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"])
async def test_client_that_never_finishes_its_request_head_is_dropped(relay_factory, partial):
    relay = await relay_factory(head_timeout=TINY_TIMEOUT)
    start = trio.current_time()  # before connecting: the relay's timer starts when it accepts
    stream = await open_stream(relay.http)
    async with stream:
        await stream.send_all(partial)
        status, _, body = parse_response(await read_to_eof(stream))
    assert status == 408
    assert json.loads(body)["ok"] is False
    assert trio.current_time() - start >= TINY_TIMEOUT
    await assert_still_serving(relay)


async def test_silent_websocket_client_gets_auth_timeout(relay_factory):
    relay = await relay_factory(auth_timeout=TINY_TIMEOUT)
    ws = await ws_connect(relay.url)
    reply = await receive_json(ws)
    assert (reply["channel"], reply["type"]) == ("system", "auth.fail")
    assert reply["payload"] == {"reason": AUTH_TIMEOUT_REASON}
    assert (await expect_closed(ws)).code == CLOSE_POLICY


async def test_head_timeout_does_not_limit_an_upgraded_websocket(relay_factory):
    # Regression: the request-head deadline used to wrap the whole WebSocket session.
    relay = await relay_factory(head_timeout=TINY_TIMEOUT / 2, auth_timeout=TINY_TIMEOUT * 1.5)
    paired, _ = await pair(relay.url, relay.http)
    start = trio.current_time()
    silent = await ws_connect(relay.url)
    reply = await receive_json(silent)  # arrives after auth_timeout, well past head_timeout
    assert reply["payload"] == {"reason": AUTH_TIMEOUT_REASON}
    assert trio.current_time() - start >= TINY_TIMEOUT * 1.5

    await send_json(paired, "system", "ping", {"ts": 1})
    assert (await receive_json(paired))["type"] == "pong"


async def test_auth_reply_echoes_the_auth_frame_id(relay):
    code = await register_code(relay.http)
    ws = await ws_connect(relay.url)
    await ws.send_message(auth_frame({"pairing_code": code}, msg_id="xyz-1"))
    assert (await receive_json(ws))["id"] == "xyz-1"


# -- caps on unauthenticated connections -----------------------------------------------------------

async def assert_upgrade_busy(relay, body: str) -> None:
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        await ws_connect(relay.url)
    assert info.value.status_code == 503
    assert info.value.body == body.encode()
    assert dict(info.value.headers)[b"retry-after"] == b"1"


async def test_unauthenticated_connections_per_address_are_capped(relay):
    assert MAX_UNAUTHED_PER_IP == 32
    code = await register_code(relay.http)
    held = [await ws_connect(relay.url) for _ in range(MAX_UNAUTHED_PER_IP)]
    await assert_upgrade_busy(relay, BUSY_PER_IP_BODY)  # the 33rd

    # Plain HTTP is not part of the cap.
    status, health = await http_json("GET", f"{relay.http}/health")
    assert (status, health["connections"]) == (200, 0)

    # A connection stops counting once its authentication is decided, either way: the relay frees
    # the place before it answers, so the reply is enough to know the next upgrade fits.
    await held[0].send_message(auth_frame({"pairing_code": code}))
    assert (await receive_json(held[0]))["type"] == "auth.ok"
    extra = await ws_connect(relay.url)
    await assert_upgrade_busy(relay, BUSY_PER_IP_BODY)
    await held[1].send_message(auth_frame({"pairing_code": "NOPE00"}))
    assert (await receive_json(held[1]))["type"] == "auth.fail"
    await ws_connect(relay.url)
    await assert_upgrade_busy(relay, BUSY_PER_IP_BODY)
    # The authenticated one still works.
    await send_json(held[0], "system", "ping", {"ts": 1})
    assert (await receive_json(held[0]))["type"] == "pong"
    assert extra.closed is None


async def test_unauthenticated_connections_are_capped_over_all_addresses(relay_factory):
    relay = await relay_factory(max_unauthed=3)
    for _ in range(3):
        await ws_connect(relay.url)
    await assert_upgrade_busy(relay, BUSY_BODY)


async def test_a_connection_that_times_out_before_auth_gives_its_place_back(relay_factory):
    relay = await relay_factory(max_unauthed_per_ip=1, auth_timeout=0.5)
    silent = await ws_connect(relay.url)
    await assert_upgrade_busy(relay, BUSY_PER_IP_BODY)
    assert (await receive_json(silent))["payload"] == {"reason": AUTH_TIMEOUT_REASON}
    await ws_connect(relay.url)


@pytest.mark.parametrize("same,other", [
    (["2001:db8:0:1::1", "2001:db8:0:1:ffff::2"], "2001:db8:0:2::1"),  # IPv6 counts per /64
    (["198.51.100.7", "::ffff:198.51.100.7"], "198.51.100.8"),       # IPv4 (mapped or not) per address
])
def test_unauthenticated_cap_counts_per_rate_limit_bucket(same, other):
    relay = RelayCore(RelayConfig(max_unauthed_per_ip=2))
    slots = [relay.take_unauthed_slot(ip) for ip in same]
    assert not any(isinstance(s, str) for s in slots)
    assert relay.take_unauthed_slot(same[0]) == BUSY_PER_IP_BODY
    assert not isinstance(relay.take_unauthed_slot(other), str)
    slots[0].release()
    slots[0].release()  # idempotent
    assert relay.unauthed == 2
    assert not isinstance(relay.take_unauthed_slot(same[1]), str)


async def test_an_upgrade_the_websocket_layer_refuses_gives_its_place_back(relay_factory):
    # Passes our own check (GET + Upgrade + Connection) but has no Sec-WebSocket-Key: trio-websocket
    # answers 400 and then waits for nothing. The relay must still end the connection and free the
    # place, or a few such requests would lock every client out with 503s.
    relay = await relay_factory(max_unauthed_per_ip=1, head_timeout=0.3)
    stream = await open_stream(relay.url)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    with trio.fail_after(3):
        raw = await read_to_eof(stream)
    await stream.aclose()
    assert raw.startswith(b"HTTP/1.1 4")
    with trio.fail_after(3):  # within head_timeout the place is given back (before the fix: never)
        while (await http_json("GET", f"{relay.http}/health"))[1]["unauthenticated"]:
            await trio.sleep(0.02)
    ws = await ws_connect(relay.url)  # the single place is free again
    assert ws.closed is None
