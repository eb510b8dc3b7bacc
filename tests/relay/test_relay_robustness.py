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
from hermes_relay.relay.http import MAX_HEAD
from hermes_relay.relay.server import AUTH_TIMEOUT_REASON, CLOSE_POLICY, MAX_MESSAGE

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


@pytest.mark.parametrize("when", ["before_auth", "after_auth"])
async def test_frame_over_one_mib_closes_that_connection_only(relay, when):
    _, bystander = await pair(relay.url, relay.http)
    bystander_ws, _ = await ws_auth(relay.url, {"session_token": bystander["session_token"]})
    if when == "after_auth":
        ws, _ = await pair(relay.url, relay.http)
    else:
        ws = await ws_connect(relay.url)

    with pytest.raises(trio_websocket.ConnectionClosed):
        await ws.send_message("x" * (MAX_MESSAGE + 1))
        await ws.get_message()
    assert ws.closed is not None and ws.closed.code == 1009  # RFC 6455: message too big

    ping_id = await send_json(bystander_ws, "system", "ping", {"ts": 1})
    pong = await receive_json(bystander_ws)
    assert (pong["type"], pong["id"]) == ("pong", ping_id)
    await assert_still_serving(relay)


async def test_frame_of_exactly_one_mib_is_accepted(relay):
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

    chat_id = await send_json(ws, "chat", "message", {"text": "hi"})
    reply = await receive_json(ws)
    assert (reply["type"], reply["id"], reply["payload"]["channel"]) == ("error", chat_id, "chat")

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
    stream = await open_stream(relay.http)
    async with stream:
        start = trio.current_time()
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
