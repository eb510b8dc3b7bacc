"""Several computers on one relay, and a relay that stops mid-call (issue #18 item 3).

Real relay, real sockets, scripted desktop clients. The Hermes agent's availability check
(``GET /desktop/_ping?tool=X``) never names a device: it must pass while any computer offers the tool,
as on the reference relay, while the call itself asks for a device and routes by it.
"""

from __future__ import annotations

import trio
from helpers import http_json, pair
from relay_desktop_clients import READ_FILE, TERMINAL, Call, answer, desktop_client, next_command, post_tool

from hermes_relay.relay.desktop import NO_CLIENT


async def ping(relay, query: str) -> tuple[int, dict]:
    return await http_json("GET", f"{relay.http}/desktop/_ping?{query}")


async def test_ping_without_a_device_passes_when_any_computer_offers_the_tool(relay):
    work, _, work_id = await desktop_client(relay, "WORKPC", tools=(TERMINAL, READ_FILE))
    laptop, _, laptop_id = await desktop_client(relay, "LAPTOP", tools=(READ_FILE,))

    status, body = await ping(relay, f"tool={READ_FILE}")
    assert status == 200 and body["ok"] is True, body
    assert sorted(t["device_id"] for t in body["targets"]) == sorted([work_id, laptop_id])
    status, body = await ping(relay, f"tool={TERMINAL}")  # only one of them offers it
    assert status == 200 and [t["device_id"] for t in body["targets"]] == [work_id], body
    status, body = await ping(relay, "tool=desktop_nonexistent")
    assert status == 503 and body["ok"] is False, body
    status, body = await ping(relay, f"tool={TERMINAL}&device=laptop")
    assert status == 503, body

    # The call without a device gets the reference's words, naming both computers.
    status, body = await post_tool(relay, READ_FILE, {"path": "a"})
    assert status == 409
    assert body["error"].startswith("Multiple desktop clients are connected; pass device or device_id explicitly. "
                                    "Available: ")
    assert f"WORKPC ({work_id})" in body["error"] and f"LAPTOP ({laptop_id})" in body["error"]

    for selector, ws, name in (({"device": "laptop"}, laptop, "LAPTOP"), ({"device_id": work_id}, work, "WORKPC")):
        call = Call()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.run, relay, READ_FILE, {"path": "a", **selector})
            command = await next_command(ws)
            await answer(ws, command["payload"]["request_id"], f"from {name}")
            status, body = await call.wait()
        assert (status, body["result"], body["target"]["device_name"]) == (200, f"from {name}", name)


async def test_a_paired_computer_that_sends_no_desktop_envelope_is_not_a_target(relay):
    # A restricted agent: paired as a desktop, connected, but silent on the desktop channel.
    await pair(relay.url, relay.http, device_name="LOCKED")
    status, body = await ping(relay, f"tool={TERMINAL}")
    assert (status, body["error"]) == (503, NO_CLIENT)
    status, body = await ping(relay, "")
    assert status == 503
    status, body = await post_tool(relay, TERMINAL, {"command": "id", "device": "LOCKED"})
    assert status == 503, body

    await desktop_client(relay, "WORKPC", tools=(READ_FILE,))
    status, body = await ping(relay, f"tool={TERMINAL}")
    assert status == 503, body


async def test_a_call_in_flight_when_the_relay_stops_gets_the_references_502(relay_factory):
    relay = await relay_factory()
    ws, _, _ = await desktop_client(relay, "WORKPC")
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, TERMINAL, {"command": "sleep 100"})
        await next_command(ws)
        await relay.stop()
        status, body = await call.wait()
    assert (status, body) == (502, {"ok": False, "error": "Desktop client disconnected (Relay server shutting down)"})


async def test_a_client_that_lists_no_tools_is_locked_not_a_legacy_client_that_takes_any(relay):
    # The reference daemon in restricted mode connects "locked": a status whose advertised_tools is [].
    locked, _, _ = await desktop_client(relay, "LOCKED", tools=())
    status, body = await ping(relay, f"tool={TERMINAL}")
    assert status == 503 and "does not advertise tool" in body["error"], body
    status, body = await post_tool(relay, TERMINAL, {"command": "id"})
    assert status == 404, body
    status, body = await ping(relay, f"tool={TERMINAL}&device=locked")
    assert status == 503, body
