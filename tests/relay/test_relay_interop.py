"""Wire details reference clients depend on: unserved channels fail fast on their own channel (and ``tui`` never
gets a ``tui.error``), refresh tokens as the reference relay issues them, the small HTTP differences."""

from __future__ import annotations

import json

import pytest
import trio
from helpers import FakeWallClock, expect_closed, http_json, http_request, pair, receive_json, register_code, send_json, ws_auth

from hermes_relay import __version__
from hermes_relay.core import payload
from hermes_relay.core.codes import CODE_ALPHABET, generate_code
from hermes_relay.relay.server import CLOSE_AUTH_FAILED
from hermes_relay.relay.sessions import REFRESH_TTL

DAY = 86400
FAIL_FAST = 1.0  # seconds: reference clients otherwise wait 30-60 s


async def next_on(ws, channel: str) -> dict:
    while True:
        msg = await receive_json(ws)
        if msg["channel"] == channel:
            return msg


# -- unserved channels ---------------------------------------------------------------------------------

async def test_a_reference_style_daemon_stays_connected_while_tools_and_chat_requests_fail_at_once(relay):
    # What the reference daemon does: auth, tui.attach at once, then stays (and keeps pinging).
    ws, _ = await pair(relay.url, relay.http)
    attach_id = await send_json(ws, "tui", "tui.attach", {"cols": 80, "rows": 24})
    with trio.fail_after(FAIL_FAST):
        attached = await receive_json(ws)
        ready = await receive_json(ws)
    assert (attached["channel"], attached["type"], attached["id"]) == ("tui", "tui.attached", attach_id)
    assert attached["payload"]["server_version"] == __version__ and isinstance(attached["payload"]["pid"], int)
    assert (ready["type"], ready["payload"]["method"], ready["payload"]["params"]["type"]) == \
        ("tui.rpc.event", "event", "gateway.ready")

    # `tools`: a JSON-RPC request through the tunnel gets a JSON-RPC error, never tui.error.
    req_id = await send_json(ws, "tui", "tui.rpc.request", {"id": "r1", "jsonrpc": "2.0", "method": "tools.list",
                                                            "params": {}})
    with trio.fail_after(FAIL_FAST):
        reply = await receive_json(ws)
    assert (reply["channel"], reply["type"], reply["id"]) == ("tui", "tui.rpc.response", req_id)
    assert reply["payload"]["id"] == "r1" and reply["payload"]["jsonrpc"] == "2.0"
    assert "no Hermes agent gateway" in reply["payload"]["error"]["message"]

    # `chat` and `shell`: answered on their own channel, echoing the id.
    for channel, typ, expected in (("chat", "chat.send", "chat.error"), ("terminal", "terminal.attach", "terminal.error")):
        msg_id = await send_json(ws, channel, typ, {"message": "hi", "session_name": "main", "cols": 80, "rows": 24})
        with trio.fail_after(FAIL_FAST):
            reply = await receive_json(ws)
        assert (reply["channel"], reply["type"], reply["id"]) == (channel, expected, msg_id)
        assert set(reply["payload"]) == {"message"} and "does not serve" in reply["payload"]["message"]

    await send_json(ws, "tui", "tui.resize", {"cols": 100, "rows": 30})  # needs no answer
    ping_id = await send_json(ws, "system", "ping", {"ts": 1})
    reply = await receive_json(ws)
    assert (reply["type"], reply["id"]) == ("pong", ping_id)  # still connected, nothing else was sent


async def test_tui_error_is_never_sent(relay):
    ws, _ = await pair(relay.url, relay.http)
    for typ, body in (("tui.rpc.request", {"id": 5, "method": "session.create"}), ("tui.attach", {}),
                      ("tui.detach", {}), ("tui.unknown", {})):
        await send_json(ws, "tui", typ, body)
    await send_json(ws, "system", "ping", {"ts": 1})
    seen = []
    with trio.fail_after(FAIL_FAST):
        while (msg := await receive_json(ws))["type"] != "pong":
            seen.append(msg["type"])
    assert seen == ["tui.rpc.response", "tui.attached", "tui.rpc.event"]


# -- refresh tokens ---------------------------------------------------------------------------------------

async def test_refresh_token_is_32_random_bytes_and_bound_to_its_device(relay):
    _, ok = await pair(relay.url, relay.http, device_id="laptop")
    assert len(ok["refresh_token"]) == 43  # 32 bytes, URL-safe base64 without padding
    for other in ({"device_id": "someone-else"}, {}):
        _, reply = await ws_auth(relay.url, {"refresh_token": ok["refresh_token"], **other})
        assert reply["type"] == "auth.fail"
    _, reply = await ws_auth(relay.url, {"refresh_token": ok["refresh_token"], "device_id": "laptop"})
    assert reply["type"] == "auth.ok"


async def test_refresh_token_outlives_its_session_for_180_days(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, ok = await pair(relay.url, relay.http, device_id="laptop", ttl_seconds=30 * DAY)
    clock.advance(REFRESH_TTL - 1)
    _, reply = await ws_auth(relay.url, {"refresh_token": ok["refresh_token"], "device_id": "laptop"})
    assert reply["type"] == "auth.ok"
    assert reply["payload"]["expires_at"] == clock.now + 30 * DAY
    renewed = reply["payload"]
    clock.advance(REFRESH_TTL)
    _, reply = await ws_auth(relay.url, {"refresh_token": renewed["refresh_token"], "device_id": "laptop"})
    assert reply["type"] == "auth.fail"  # 180 days after it was issued


@pytest.mark.parametrize("expired", [False, True])
async def test_revoking_a_session_kills_its_refresh_token(relay_factory, expired):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, ok = await pair(relay.url, relay.http, device_id="laptop", ttl_seconds=600)
    if expired:  # an expired session its refresh token could revive is still listed and revocable
        clock.advance(601)
    status, _ = await http_json("DELETE", f"{relay.http}/sessions/{ok['session_token'][:8]}")
    assert status == 200
    _, reply = await ws_auth(relay.url, {"refresh_token": ok["refresh_token"], "device_id": "laptop"})
    assert reply["type"] == "auth.fail"


# -- small wire differences --------------------------------------------------------------------------------

async def test_default_grants_follow_the_reference(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, ok = await pair(relay.url, relay.http, ttl_seconds=90 * DAY)
    grants = ok["grants"]
    assert grants["terminal"] == grants["tui"] == clock.now + 30 * DAY
    assert grants["bridge"] == clock.now + 7 * DAY
    assert grants["chat"] == grants["voice:stt"] == clock.now + 90 * DAY
    _, never = await pair(relay.url, relay.http, ttl_seconds=0)
    assert set(never["grants"].values()) == {None}


async def test_auth_ok_says_unknown_for_surface_and_form_factor_not_given(relay):
    code = await register_code(relay.http)
    _, reply = await ws_auth(relay.url, {"pairing_code": code, "device_id": "x"})
    assert (reply["payload"]["client_surface"], reply["payload"]["device_form_factor"]) == ("unknown", "unknown")


async def test_register_without_a_code_is_400_and_mint_picks_one(relay):
    status, obj = await http_json("POST", f"{relay.http}/pairing/register", {})
    assert status == 400 and "missing 'code'" in obj["error"]
    status, obj = await http_json("POST", f"{relay.http}/pairing/mint", {"ttl_seconds": 3600})
    assert status == 200
    assert obj["ok"] is True and len(obj["code"]) == 6 and obj["ttl_seconds"] == 3600
    assert obj["relay_url"] == relay.url
    assert (obj["host"], obj["port"], obj["tls"]) == ("127.0.0.1", relay.info.port, False)
    invite = payload.parse(obj["qr_payload"])  # the reference relay's answer carries the invite as JSON text
    assert (invite.code, invite.routes[0].url, invite.ttl_seconds) == (obj["code"], relay.url, 3600)
    assert payload.parse(obj["pairing_url"]).code == obj["code"]
    _, reply = await ws_auth(relay.url, {"pairing_code": obj["code"], "device_id": "x"})
    assert reply["type"] == "auth.ok"
    status, obj = await http_json("POST", f"{relay.http}/pairing/mint", {"endpoints": {}})
    assert status == 400 and "endpoints" in obj["error"]


async def test_mint_is_for_the_relay_host_only(relay):
    status, _, body = await http_request("POST", f"{relay.http}/pairing/mint", b"{}",
                                         [("Content-Type", "application/json"), ("X-Forwarded-For", "203.0.113.5")])
    assert status == 403 and "loopback" in json.loads(body)["error"]


async def test_empty_prefix_is_404_and_get_on_a_prefix_is_405_without_offering_get(relay):
    _, ok = await pair(relay.url, relay.http)
    status, obj = await http_json("PATCH", f"{relay.http}/sessions/", {"ttl_seconds": 60}, token=ok["session_token"])
    assert status == 404 and obj["ok"] is False
    status, obj = await http_json("GET", f"{relay.http}/sessions/{ok['session_token'][:8]}", token=ok["session_token"])
    assert status == 405 and "GET" not in obj["error"]
    assert "DELETE" in obj["error"] and "PATCH" in obj["error"]


@pytest.mark.parametrize("keep", [False, True])
async def test_close_on_revoke_switch(relay_factory, keep):
    relay = await relay_factory(close_on_revoke=not keep)
    ws, ok = await pair(relay.url, relay.http)
    status, _ = await http_json("DELETE", f"{relay.http}/sessions/{ok['session_token'][:8]}")
    assert status == 200
    if keep:  # like the reference relay: the socket stays until the client re-authenticates
        await send_json(ws, "system", "ping", {"ts": 1})
        assert (await receive_json(ws))["type"] == "pong"
    else:
        closed = await expect_closed(ws)
        assert (closed.code, closed.reason) == (CLOSE_AUTH_FAILED, "session revoked")
    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"]})
    assert reply["type"] == "auth.fail"


def test_minted_codes_avoid_look_alikes_but_typed_ones_are_accepted():
    codes = {generate_code() for _ in range(2000)}
    assert not any(ch in code for code in codes for ch in "O0I1")
    assert {"O", "0", "I", "1"} <= set(CODE_ALPHABET)  # still valid when a code with them is typed


async def test_a_registered_code_with_look_alikes_still_pairs(relay):
    code = await register_code(relay.http, code="O0I1AB")
    _, reply = await ws_auth(relay.url, {"pairing_code": code.lower(), "device_id": "x"})
    assert reply["type"] == "auth.ok"


async def test_a_refresh_token_works_for_a_long_or_non_text_device_id(relay):
    # The session keeps the device_id cut to its text limit; the refresh check compares the same form.
    for device_id in ("d" * 300, 12345):
        _, paired = await pair(relay.url, relay.http, device_id=device_id)
        _, reply = await ws_auth(relay.url, {"refresh_token": paired["refresh_token"], "device_id": device_id})
        assert reply["type"] == "auth.ok"
