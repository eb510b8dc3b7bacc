"""Who a desktop socket is comes from its session, never from what the socket says (issue #17 item 8).

A real relay, real sockets: a phone paired normally, or a second computer, that reconnects claiming
the desktop's ``device_id`` and name (in its auth frame and in its ``desktop.status``) must never
receive the desktop's calls, even with the ids ``GET /sessions`` lists and even while the desktop is
offline.
"""

from __future__ import annotations

import uuid
from typing import Any

import trio
from helpers import http_json, pair, receive_json, send_json, ws_auth
from relay_desktop_clients import TERMINAL, TOOLS, Call, advertise, answer, desktop_client, next_command, post_tool

from hermes_relay.core.wire import MAX_WS_MESSAGE


async def commands_until_synced(ws: Any) -> list[dict[str, Any]]:
    """Every ``desktop.command`` the relay sent ``ws`` before it answered a ping sent now."""
    ping_id = await send_json(ws, "system", "ping", {"ts": 1})
    seen = []
    while True:
        env = await receive_json(ws)
        if env["type"] == "pong" and env["id"] == ping_id:
            return seen
        if env["type"] in ("desktop.command", "command"):
            seen.append(env)


async def impostor(relay: Any, token: str, victim_id: str, victim_name: str) -> Any:
    """Reconnect a paired session claiming ``victim``'s identity everywhere a client can claim one."""
    claim = {"device_id": victim_id, "device_name": victim_name, "device_hostname": victim_name,
             "client_surface": "desktop"}
    ws, reply = await ws_auth(relay.url, {"session_token": token, **claim})
    assert reply["type"] == "auth.ok", reply
    ws._max_message_size = MAX_WS_MESSAGE
    await advertise(ws, victim_id, victim_name, TOOLS)
    return ws


async def test_a_phone_claiming_the_desktops_id_never_receives_its_calls(relay):
    desktop, _, desktop_id = await desktop_client(relay, "WORKPC")
    # What anyone with a token learns from GET /sessions: the desktop's device id and name.
    _, phone_ok = await pair(relay.url, relay.http, device_id=str(uuid.uuid4()), device_name="Pixel",
                             client_surface="android")
    status, listed = await http_json("GET", f"{relay.http}/sessions", token=phone_ok["session_token"])
    assert status == 200 and desktop_id in {s["device_id"] for s in listed["sessions"]}

    phone = await impostor(relay, phone_ok["session_token"], desktop_id, "WORKPC")

    for selector in ({}, {"device_id": desktop_id}, {"device": "WORKPC"}):
        call = Call()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.run, relay, TERMINAL, {"command": "id", **selector})
            command = await next_command(desktop)
            await answer(desktop, command["payload"]["request_id"], "from the desktop")
            status, body = await call.wait()
        assert (status, body["result"]) == (200, "from the desktop"), selector
        assert body["target"] == {"device_id": desktop_id, "device_name": "WORKPC"}
    assert await commands_until_synced(phone) == []

    # With the desktop gone, there is no desktop: the phone is not one, whatever it says.
    await desktop.aclose()
    status, body = await post_tool(relay, TERMINAL, {"command": "id", "device_id": desktop_id})
    assert status == 503, body
    status, _ = await http_json("GET", f"{relay.http}/desktop/_ping?tool={TERMINAL}")
    assert status == 503
    assert await commands_until_synced(phone) == []


async def test_a_second_computer_claiming_the_first_ones_identity_never_gets_its_calls(relay):
    first, first_token, first_id = await desktop_client(relay, "WORKPC")
    _, _, second_id = await desktop_client(relay, "LAPTOP")
    _, second_ok = await pair(relay.url, relay.http, device_id=str(uuid.uuid4()), device_name="LAPTOP2")
    other = await impostor(relay, second_ok["session_token"], first_id, "WORKPC")

    status, body = await http_json("GET", f"{relay.http}/desktop/health")
    names = sorted((c["device_id"], c["device_name"]) for c in body["clients"])
    assert (first_id, "WORKPC") in names and names.count((first_id, "WORKPC")) == 1

    await first.aclose()
    for selector in ({"device_id": first_id}, {"device": "WORKPC"}):
        status, body = await post_tool(relay, TERMINAL, {"command": "id", **selector})
        assert status == 404 and body["error"].startswith("Unknown desktop device selector"), (selector, body)
    assert await commands_until_synced(other) == []
    assert second_id != first_id and first_token


async def test_an_auth_frame_cannot_rename_a_session_or_make_it_a_desktop(relay):
    _, phone_ok = await pair(relay.url, relay.http, device_id="phone-1", device_name="Pixel", client_surface="android")
    token = phone_ok["session_token"]
    ws, reply = await ws_auth(relay.url, {"session_token": token, "device_id": "phone-1", "device_name": "WORKPC",
                                          "client_surface": "desktop"})
    assert reply["type"] == "auth.ok" and reply["payload"]["client_surface"] == "android"
    status, listed = await http_json("GET", f"{relay.http}/sessions")
    mine = [s for s in listed["sessions"] if s["device_id"] == "phone-1"]
    assert [(s["device_name"], s["client_surface"]) for s in mine] == [("Pixel", "android")]


async def test_a_revoked_session_kept_open_serves_no_more_calls(relay_factory):
    relay = await relay_factory(close_on_revoke=False)  # as the reference relay: revoked sockets stay open
    ws, token, _ = await desktop_client(relay, "WORKPC")
    status, _ = await http_json("DELETE", f"{relay.http}/sessions/{token[:8]}")
    assert status == 200
    status, body = await post_tool(relay, TERMINAL, {"command": "id"})
    assert status == 503, body
    await advertise(ws, "x", "WORKPC")  # speaking again does not make it a target again
    status, body = await post_tool(relay, TERMINAL, {"command": "id"})
    assert status == 503, body
    assert await commands_until_synced(ws) == []
