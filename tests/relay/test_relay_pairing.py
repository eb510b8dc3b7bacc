"""Pairing and re-authentication over a real WebSocket on 127.0.0.1:0.

Expiry is driven by a FakeWallClock injected through RelayConfig(wall_clock=...), so every
``expires_at`` the relay reports can be asserted exactly.
"""

from __future__ import annotations

import re
import uuid

import pytest
import trio_websocket
from helpers import (
    FakeWallClock,
    auth_frame,
    expect_closed,
    http_json,
    pair,
    receive_json,
    register_code,
    ws_auth,
    ws_connect,
)

import hermes_relay
from hermes_relay.relay.pairing import CODE_TTL, DEFAULT_SESSION_TTL
from hermes_relay.relay.server import AUTH_FAIL_REASON, CLOSE_AUTH_FAILED
from hermes_relay.relay.sessions import STANDBY_GRACE

DAY = 86400
CHANNELS = {"chat", "terminal", "bridge", "tui", "voice:config", "voice:stt", "voice:tts", "voice:realtime"}
AUTH_OK_FIELDS = {
    "session_token", "server_version", "profiles", "expires_at", "grants", "transport_hint",
    "client_surface", "device_form_factor", "refresh_token",
}


async def assert_rejected(ws: trio_websocket.WebSocketConnection, reply: dict) -> None:
    assert reply["channel"] == "system"
    assert reply["type"] == "auth.fail"
    assert reply["payload"] == {"reason": AUTH_FAIL_REASON}
    assert (await expect_closed(ws)).code == CLOSE_AUTH_FAILED


async def test_pairing_code_yields_auth_ok_with_exactly_the_reference_fields(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    code = await register_code(relay.http)
    ws = await ws_connect(relay.url)
    await ws.send_message(auth_frame({
        "pairing_code": code, "device_name": "work laptop", "device_id": "dev-1",
        "client_surface": "desktop", "device_form_factor": "laptop",
    }, msg_id="auth-1"))
    reply = await receive_json(ws)

    assert (reply["channel"], reply["type"], reply["id"]) == ("system", "auth.ok", "auth-1")
    ok = reply["payload"]
    assert set(ok) == AUTH_OK_FIELDS
    assert ok["server_version"] == hermes_relay.__version__
    assert ok["profiles"] == []
    session_end = clock.now + DEFAULT_SESSION_TTL
    assert ok["expires_at"] == session_end
    # Default grants last as long as the session, except bridge, capped at 7 days.
    assert ok["grants"] == {ch: (clock.now + 7 * DAY if ch == "bridge" else session_end) for ch in CHANNELS}
    assert ok["transport_hint"] == "ws"
    assert ok["client_surface"] == "desktop"
    assert ok["device_form_factor"] == "laptop"
    assert isinstance(ok["session_token"], str) and len(ok["session_token"]) >= 43
    assert isinstance(ok["refresh_token"], str) and ok["refresh_token"] != ok["session_token"]


async def test_registered_code_is_six_characters_and_valid_for_ten_minutes(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    status, obj = await http_json("POST", f"{relay.http}/pairing/mint", {})
    assert status == 200
    assert obj["ok"] is True
    assert re.fullmatch(r"[A-Z0-9]{6}", obj["code"])
    assert obj["expires_at"] == clock.now + CODE_TTL == clock.now + 600


async def test_session_ttl_of_600_seconds_bounds_every_grant(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, ok = await pair(relay.url, relay.http, ttl_seconds=600)
    assert ok["expires_at"] == clock.now + 600
    assert ok["grants"] == {ch: clock.now + 600 for ch in CHANNELS}


async def test_ttl_zero_gives_a_session_that_never_expires(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, ok = await pair(relay.url, relay.http, ttl_seconds=0)
    assert ok["expires_at"] is None
    assert ok["grants"] == {ch: None for ch in CHANNELS}  # as the reference relay: every grant never expires


async def test_requested_grants_and_transport_hint_are_carried_by_the_code(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    code = await register_code(relay.http, ttl_seconds=600, grants={"chat": 60, "voice:realtime": 0},
                               transport_hint="wss")
    _, reply = await ws_auth(relay.url, {"pairing_code": code, "device_id": "d"})
    ok = reply["payload"]
    assert ok["transport_hint"] == "wss"
    assert ok["grants"]["chat"] == clock.now + 60
    assert ok["grants"]["voice:realtime"] == clock.now + 600  # "never" is still capped by the session


async def test_chosen_code_is_upper_cased_and_matches_case_insensitively(relay):
    assert await register_code(relay.http, code="abc123") == "ABC123"
    _, reply = await ws_auth(relay.url, {"pairing_code": "abc123", "device_id": "d"})
    assert reply["type"] == "auth.ok"


async def test_pairing_code_works_only_once(relay):
    code = await register_code(relay.http)
    _, first = await ws_auth(relay.url, {"pairing_code": code, "device_id": "a"})
    assert first["type"] == "auth.ok"
    ws, second = await ws_auth(relay.url, {"pairing_code": code, "device_id": "b"})
    await assert_rejected(ws, second)


async def test_pairing_code_is_still_valid_one_second_before_it_expires(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    code = await register_code(relay.http)
    clock.advance(CODE_TTL - 1)
    _, reply = await ws_auth(relay.url, {"pairing_code": code})
    assert reply["type"] == "auth.ok"


@pytest.mark.parametrize("age", [CODE_TTL, CODE_TTL + 1, 3600])
async def test_expired_pairing_code_is_rejected(relay_factory, age):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    code = await register_code(relay.http)
    clock.advance(age)
    ws, reply = await ws_auth(relay.url, {"pairing_code": code})
    await assert_rejected(ws, reply)


@pytest.mark.parametrize("payload", [
    {"pairing_code": "ZZZZZZ"},
    {"session_token": "not-a-token"},
    {"refresh_token": "not-a-refresh-token"},
    {},
    {"pairing_code": 123456, "session_token": ["x"]},
])
async def test_unknown_credentials_are_rejected_with_the_reference_reason(relay, payload):
    ws, reply = await ws_auth(relay.url, payload)
    await assert_rejected(ws, reply)


async def test_session_token_reconnects_to_the_same_session(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    ws, ok = await pair(relay.url, relay.http, device_name="old name")
    await ws.aclose()
    clock.advance(30)

    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"], "device_name": "new name",
                                         "device_model": "new model"})
    assert reply["type"] == "auth.ok"
    again = reply["payload"]
    assert set(again) == AUTH_OK_FIELDS - {"refresh_token"}  # a token login does not rotate anything
    assert again["session_token"] == ok["session_token"]
    assert again["expires_at"] == ok["expires_at"]
    assert again["grants"] == ok["grants"]

    _, listing = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    (sess,) = listing["sessions"]
    # The name is the one it was paired with (an auth frame cannot rename a session); details may change.
    assert (sess["device_name"], sess["device_model"]) == ("old name", "new model")
    assert sess["last_seen"] == clock.now
    assert sess["first_seen"] == clock.now - 30


async def test_refresh_token_rotates_both_tokens_and_retires_the_old_ones(relay):
    ws_old, ok = await pair(relay.url, relay.http, device_id="dev-1")

    _, reply = await ws_auth(relay.url, {"refresh_token": ok["refresh_token"], "device_id": "dev-1"})
    assert reply["type"] == "auth.ok"
    new = reply["payload"]
    assert set(new) == AUTH_OK_FIELDS
    assert new["session_token"] != ok["session_token"]
    assert new["refresh_token"] != ok["refresh_token"]
    assert new["expires_at"] == ok["expires_at"]

    closed = await expect_closed(ws_old)  # the socket on the retired token is closed at once
    assert (closed.code, closed.reason) == (CLOSE_AUTH_FAILED, "session token rotated")

    for stale in ({"session_token": ok["session_token"]}, {"refresh_token": ok["refresh_token"], "device_id": "dev-1"}):
        ws, rejected = await ws_auth(relay.url, stale)
        await assert_rejected(ws, rejected)

    _, fresh = await ws_auth(relay.url, {"session_token": new["session_token"]})
    assert fresh["type"] == "auth.ok"
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=new["session_token"])
    assert [s["token_prefix"] for s in listing["sessions"]] == [new["session_token"][:8]]


async def test_session_token_is_tried_before_a_pairing_code(relay):
    _, ok = await pair(relay.url, relay.http)
    code = await register_code(relay.http)
    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"], "pairing_code": code})
    assert reply["payload"]["session_token"] == ok["session_token"]
    _, again = await ws_auth(relay.url, {"pairing_code": code})  # the code was not spent
    assert again["type"] == "auth.ok"


async def test_pairing_the_same_device_again_replaces_its_old_session(relay):
    """The old session ends at once (token refused, socket closed, not listed); its refresh token is kept
    on standby for the new session only (see the next tests), so the listing shows one session."""
    device_id = uuid.uuid4().hex
    ws_old, old = await pair(relay.url, relay.http, device_id=device_id)
    _, other = await pair(relay.url, relay.http)
    _, new = await pair(relay.url, relay.http, device_id=device_id)

    closed = await expect_closed(ws_old)
    assert closed.code == CLOSE_AUTH_FAILED
    ws, reply = await ws_auth(relay.url, {"session_token": old["session_token"]})
    await assert_rejected(ws, reply)

    _, listing = await http_json("GET", f"{relay.http}/sessions", token=new["session_token"])
    prefixes = {s["token_prefix"] for s in listing["sessions"]}
    assert prefixes == {new["session_token"][:8], other["session_token"][:8]}
    # The new session was used (the bearer call above): the old refresh token is retired with the session.
    ws, reply = await ws_auth(relay.url, {"refresh_token": old["refresh_token"], "device_id": device_id})
    await assert_rejected(ws, reply)


async def test_a_re_paired_device_that_lost_the_answer_recovers_the_new_session_with_its_old_refresh_token(relay):
    device_id = uuid.uuid4().hex
    _, old = await pair(relay.url, relay.http, device_id=device_id)
    ws_pairing, lost = await pair(relay.url, relay.http, device_id=device_id)  # the answer a kill -9 loses

    ws, reply = await ws_auth(relay.url, {"session_token": old["session_token"]})
    await assert_rejected(ws, reply)  # the old session is gone at once
    _, reply = await ws_auth(relay.url, {"refresh_token": old["refresh_token"], "device_id": device_id})
    assert reply["type"] == "auth.ok", reply
    got = reply["payload"]
    assert got["expires_at"] == lost["expires_at"] and got["grants"] == lost["grants"]  # the new pairing stands

    assert (await expect_closed(ws_pairing)).code == CLOSE_AUTH_FAILED  # the lost answer's tokens are retired
    for stale in ({"session_token": lost["session_token"]},
                  {"refresh_token": lost["refresh_token"], "device_id": device_id},
                  {"refresh_token": old["refresh_token"], "device_id": device_id}):
        ws, reply = await ws_auth(relay.url, stale)
        await assert_rejected(ws, reply)
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=got["session_token"])
    assert [s["token_prefix"] for s in listing["sessions"]] == [got["session_token"][:8]]


async def test_the_old_refresh_token_of_a_re_paired_device_is_bound_to_that_device(relay):
    device_id = uuid.uuid4().hex
    _, old = await pair(relay.url, relay.http, device_id=device_id)
    await pair(relay.url, relay.http, device_id=device_id)
    ws, reply = await ws_auth(relay.url, {"refresh_token": old["refresh_token"], "device_id": "someone-else"})
    await assert_rejected(ws, reply)


@pytest.mark.parametrize("use", ["session_token", "refresh_token"])
async def test_the_first_use_of_a_re_pairing_retires_the_old_refresh_token(relay, use):
    device_id = uuid.uuid4().hex
    _, old = await pair(relay.url, relay.http, device_id=device_id)
    _, new = await pair(relay.url, relay.http, device_id=device_id)
    _, reply = await ws_auth(relay.url, {use: new[use], "device_id": device_id})
    assert reply["type"] == "auth.ok"
    ws, reply = await ws_auth(relay.url, {"refresh_token": old["refresh_token"], "device_id": device_id})
    await assert_rejected(ws, reply)


async def test_the_old_refresh_token_of_a_re_paired_device_ends_after_the_grace(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    device_id = uuid.uuid4().hex
    _, old = await pair(relay.url, relay.http, device_id=device_id)
    await pair(relay.url, relay.http, device_id=device_id)
    clock.advance(STANDBY_GRACE + 1)
    ws, reply = await ws_auth(relay.url, {"refresh_token": old["refresh_token"], "device_id": device_id})
    await assert_rejected(ws, reply)


async def test_revoking_a_re_paired_session_kills_the_old_refresh_token_too(relay):
    device_id = uuid.uuid4().hex
    _, old = await pair(relay.url, relay.http, device_id=device_id)
    _, new = await pair(relay.url, relay.http, device_id=device_id)
    _, other = await pair(relay.url, relay.http)
    status, _ = await http_json("DELETE", f"{relay.http}/sessions/{new['session_token'][:8]}",
                                token=other["session_token"])
    assert status == 200
    for stale in ({"refresh_token": old["refresh_token"], "device_id": device_id},
                  {"refresh_token": new["refresh_token"], "device_id": device_id}):
        ws, reply = await ws_auth(relay.url, stale)
        await assert_rejected(ws, reply)


