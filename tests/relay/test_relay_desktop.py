"""The relay routes the desktop channel: real loopback sockets, scripted desktop clients, HTTP calls.

Every test talks to a real relay the way the Hermes agent's tool shim (HTTP on loopback) and a desktop
client (WebSocket) do; the scripted clients live in relay_desktop_clients.py.
"""

from __future__ import annotations

import json

import pytest
import trio
from helpers import http_json, http_request, pair, receive_json, send_json
from relay_desktop_clients import (
    READ_FILE,
    TERMINAL,
    Call,
    advertise,
    answer,
    desktop_client,
    next_command,
    post_tool,
    sync,
)

from hermes_relay.core.wire import MAX_WS_MESSAGE
from hermes_relay.relay.desktop import NO_CLIENT


async def call_and_answer(relay, ws, tool, args, result, query=""):
    """Run one call whose command ``ws`` receives and answers with ``result``; (status, body, command)."""
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, tool, args, query)
        command = await next_command(ws)
        await answer(ws, command["payload"]["request_id"], result)
        status, body = await call.wait()
    return status, body, command


@pytest.mark.parametrize("prefixed", [True, False], ids=["desktop.-prefixed", "bare"])
async def test_a_call_reaches_the_one_desktop_client_and_returns_its_answer_with_the_target(relay, prefixed):
    ws, _, device_id = await desktop_client(relay, "WORKPC", prefixed=prefixed)
    result = {"stdout": "Linux WORKPC\n", "stderr": "", "exit_code": 0, "duration_ms": 3}
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, TERMINAL, {"command": "uname -a", "timeout": 30})
        command = await next_command(ws)
        payload = command["payload"]
        assert command["id"] == payload["request_id"]
        assert payload == {"request_id": payload["request_id"], "tool": TERMINAL,
                           "args": {"command": "uname -a", "timeout": 30}, "target_device_id": device_id,
                           "budget_ms": payload["budget_ms"]}
        assert 25_000 < payload["budget_ms"] <= 30_000  # the caller's remaining time: the class timeout here
        await answer(ws, payload["request_id"], result, prefixed=prefixed)
        status, body = await call.wait()
    assert status == 200
    assert body == {"request_id": payload["request_id"], "ok": True, "result": result,
                    "target": {"device_id": device_id, "device_name": "WORKPC"}}


async def test_the_callers_remaining_time_travels_beside_args_as_budget_ms(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC")
    for query, low, high in (("?timeout=3", 2_000, 3_000), ("?timeout=0.5", 1, 500), ("", 25_000, 30_000)):
        status, body, command = await call_and_answer(relay, ws, TERMINAL, {"command": "x"}, "ok", query)
        payload = command["payload"]
        assert status == 200, body
        assert isinstance(payload["budget_ms"], int) and low <= payload["budget_ms"] <= high, (query, payload)
        assert payload["args"] == {"command": "x"}  # relative milliseconds, never inside args


async def test_a_client_error_answer_is_returned_as_200_with_ok_false(relay):
    ws, _, _ = await desktop_client(relay)
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, READ_FILE, {"path": "/nope"})
        command = await next_command(ws)
        await answer(ws, command["payload"]["request_id"], ok=False, error="ENOENT: /nope")
        status, body = await call.wait()
    assert status == 200
    assert (body["ok"], body["error"]) == (False, "ENOENT: /nope")


async def test_no_desktop_client_is_503_with_the_reference_message(relay):
    # A paired socket that never spoke on the desktop channel is not a target.
    await pair(relay.url, relay.http)
    status, body = await post_tool(relay, TERMINAL, {"command": "true"})
    assert (status, body) == (503, {"ok": False, "error": NO_CLIENT})
    status, body = await http_json("GET", f"{relay.http}/desktop/_ping?tool={TERMINAL}")
    assert status == 503 and body["connected"] is False and body["error"] == NO_CLIENT


async def test_sockets_of_one_device_id_are_one_target_and_the_newest_wins(relay):
    old, token, device_id = await desktop_client(relay, "WORKPC")
    new, _, _ = await desktop_client(relay, "WORKPC", device_id=device_id, token=token)
    status, body, command = await call_and_answer(relay, new, TERMINAL, {"command": "true"}, {"from": "new"})
    assert (status, body["result"]) == (200, {"from": "new"})
    assert command["payload"]["target_device_id"] == device_id

    # A third socket of the same install that only sent a workspace snapshot (a CLI process beside
    # the agent) serves no tools, so it does not take the calls away from the one that advertised.
    await desktop_client(relay, "WORKPC", device_id=device_id, token=token, tools=None)
    status, body, _ = await call_and_answer(relay, new, TERMINAL, {"command": "true"}, {"from": "new again"})
    assert (status, body["result"]) == (200, {"from": "new again"})

    await new.aclose()
    status, body, _ = await call_and_answer(relay, old, TERMINAL, {"command": "true"}, {"from": "old"})
    assert (status, body["result"]) == (200, {"from": "old"})


async def test_several_devices_need_a_selector_which_matches_id_name_or_host_loosely(relay):
    a, _, a_id = await desktop_client(relay, "Work-PC")
    b, _, b_id = await desktop_client(relay, "laptop")
    status, body = await post_tool(relay, TERMINAL, {"command": "true"})
    assert status == 409
    assert body["error"].startswith("Multiple desktop clients are connected; pass device or device_id explicitly. "
                                    "Available: ")
    assert f"Work-PC ({a_id})" in body["error"] and f"laptop ({b_id})" in body["error"]

    for selector, ws in [({"device": "workpc"}, a), ({"device": "LAPTOP"}, b), ({"device_id": b_id.upper()}, b),
                         ({"device": "work pc"}, a)]:
        status, body, command = await call_and_answer(relay, ws, TERMINAL, {"command": "x", **selector}, "ok")
        assert status == 200, body
        assert command["payload"]["args"] == {"command": "x"}  # the selector never reaches the client

    status, body = await post_tool(relay, TERMINAL, {"command": "x", "device": "desk"})
    assert status == 404
    assert body["error"].startswith("Unknown desktop device selector 'desk'. Available: ")


async def test_two_installs_with_one_name_are_an_ambiguous_selector(relay):
    await desktop_client(relay, "WORKPC")
    _, _, second_id = await desktop_client(relay, "WORKPC")
    status, body = await post_tool(relay, TERMINAL, {"command": "x", "device": "workpc"})
    assert (status, body["error"]) == (409, "Ambiguous desktop device selector 'workpc'; use its device_id")
    status, body = await http_json("GET", f"{relay.http}/desktop/_ping?tool={TERMINAL}&device={second_id}")
    assert status == 200 and body["target"]["device_id"] == second_id


async def test_unadvertised_tools_fail_closed_unless_the_client_advertised_nothing(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC", tools=(READ_FILE,))
    status, body = await post_tool(relay, TERMINAL, {"command": "x"})
    assert (status, body["error"]) == (404, "Desktop client does not advertise tool 'desktop_terminal'")
    status, _ = await http_json("GET", f"{relay.http}/desktop/_ping?tool={TERMINAL}")
    assert status == 503
    status, body = await http_json("GET", f"{relay.http}/desktop/_ping?tool={READ_FILE}&device=workpc")
    assert (status, body["advertised_tools"]) == (200, [READ_FILE])

    # A client that advertised nothing at all (only a workspace snapshot) gets ordinary tools forwarded,
    # but never computer-use ones.
    legacy, _, _ = await desktop_client(relay, "OLDPC", tools=None)
    status, body, _ = await call_and_answer(relay, legacy, TERMINAL, {"command": "x", "device": "oldpc"}, "ran")
    assert (status, body["result"]) == (200, "ran")
    status, body = await post_tool(relay, "desktop_computer_action", {"device": "oldpc"})
    assert status == 404 and "computer-use" in body["error"]


async def test_a_new_status_replaces_the_advertised_set(relay):
    ws, _, device_id = await desktop_client(relay, "WORKPC", tools=(READ_FILE,))
    await advertise(ws, device_id, "WORKPC", (TERMINAL,))
    status, _ = await post_tool(relay, READ_FILE, {"path": "x"})
    assert status == 404
    status, _ = await http_json("GET", f"{relay.http}/desktop/_ping?tool={TERMINAL}")
    assert status == 200


async def test_a_pending_call_fails_with_502_as_soon_as_its_socket_closes(relay):
    # The relay waits 30 s for an answer and then says 504; the 502, within the 5 s test guard, comes
    # from the close.
    ws, _, _ = await desktop_client(relay)
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, TERMINAL, {"command": "sleep 100"})
        await next_command(ws)
        await ws.aclose()
        status, body = await call.wait()
    assert status == 502
    assert body["ok"] is False and body["error"].startswith("Desktop client disconnected (WORKPC (")
    status, body = await http_json("GET", f"{relay.http}/desktop/health")
    assert body["pending_commands"] == 0 and body["connected"] is False
    assert body["recent_commands"][-1]["decision"] == "error"


async def test_a_silent_client_gives_504_after_the_timeout(relay_factory):
    relay = await relay_factory(desktop_timeout=0.2)
    ws, _, _ = await desktop_client(relay)
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, TERMINAL, {"command": "sleep 100"})
        command = await next_command(ws)
        status, body = await call.wait()
    assert status == 504
    assert body == {"ok": False, "error": "Desktop client did not respond within 0.2s (timeout)"}
    # A late answer is dropped; the link stays up and the next call works.
    await answer(ws, command["payload"]["request_id"], "too late")
    await sync(ws)
    status, body, _ = await call_and_answer(relay, ws, TERMINAL, {"command": "true"}, "in time")
    assert (status, body["result"]) == (200, "in time")
    status, health = await http_json("GET", f"{relay.http}/desktop/health")
    assert [r["decision"] for r in health["recent_commands"]] == ["timeout", "executed"]


async def test_a_shorter_timeout_can_be_asked_for_but_not_a_longer_one(relay_factory):
    relay = await relay_factory(desktop_timeout=0.3)
    await desktop_client(relay)
    status, body = await post_tool(relay, TERMINAL, {"command": "x"}, "?timeout=0.1")
    assert (status, body["error"]) == (504, "Desktop client did not respond within 0.1s (timeout)")
    status, body = await post_tool(relay, TERMINAL, {"command": "x"}, "?timeout=60")
    assert (status, body["error"]) == (504, "Desktop client did not respond within 0.3s (timeout)")
    status, body = await post_tool(relay, TERMINAL, {"command": "x"}, "?timeout=soon")
    assert status == 400 and "timeout" in body["error"]


async def test_an_answer_from_another_socket_is_ignored(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC")
    other, _, _ = await desktop_client(relay, "LAPTOP")
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, TERMINAL, {"command": "id", "device": "workpc"})
        command = await next_command(ws)
        request_id = command["payload"]["request_id"]
        await answer(other, request_id, {"stdout": "forged"})
        await sync(other)
        assert not call.done.is_set()
        await answer(ws, request_id, {"stdout": "real"})
        status, body = await call.wait()
    assert (status, body["result"]) == (200, {"stdout": "real"})


async def test_a_result_close_to_4_mib_travels_in_one_message(relay):
    ws, _, _ = await desktop_client(relay)
    big = "x" * (MAX_WS_MESSAGE - 4096)
    status, body, _ = await call_and_answer(relay, ws, READ_FILE, {"path": "big.txt"}, big)
    assert status == 200 and body["result"] == big
    await sync(ws)  # the socket is still up


async def test_request_bodies_up_to_2_mib_are_forwarded_and_larger_ones_are_413(relay):
    ws, _, _ = await desktop_client(relay, tools=("desktop_write_file",))
    content = "y" * ((2 << 20) - 100)
    status, _, command = await call_and_answer(relay, ws, "desktop_write_file", {"path": "f", "content": content}, {})
    assert status == 200 and command["payload"]["args"]["content"] == content
    status, body = await post_tool(relay, "desktop_write_file", {"path": "f", "content": "z" * (2 << 20)})
    assert status == 413 and body["ok"] is False
    # The ring of recent calls keeps a preview of the arguments, not the 2 MiB.
    _, health = await http_json("GET", f"{relay.http}/desktop/health")
    kept = health["recent_commands"][-1]["args"]["content"]
    assert kept.startswith("yyy") and kept.endswith(f"... ({len(content)} chars)") and len(kept) < 300


@pytest.mark.parametrize("body, error", [
    (b"[1, 2]", "body must be a JSON object"),
    (b"{nope", "body is not valid JSON"),
    (json.dumps({"device": 7}).encode(), "device must be a string"),
])
async def test_bad_arguments_are_400_and_nothing_is_sent(relay, body, error):
    ws, _, _ = await desktop_client(relay)
    status, reply = await post_tool(relay, TERMINAL, body)
    assert status == 400 and error in reply["error"]
    await sync(ws)  # the pong is the next message: no command was sent


async def test_health_lists_clients_status_and_recent_calls_with_secrets_redacted(relay):
    ws, _, device_id = await desktop_client(relay, "WORKPC", version="0.9.1", pid=77)
    args = {"command": "deploy", "api_key": "s3cret-1", "Authorization": "Bearer s3cret-2",
            "env": {"DB_PASSWORD": "s3cret-3", "PATH": "/bin"}, "list": [{"session_token": "s3cret-4"}]}
    status, _, _ = await call_and_answer(relay, ws, TERMINAL, args, {"stdout": "done", "token": "s3cret-5"})
    assert status == 200
    status, _, raw = await http_request("GET", f"{relay.http}/desktop/health")
    assert status == 200 and b"s3cret" not in raw
    health = json.loads(raw)
    assert health["connected"] is True and health["pending_commands"] == 0
    assert (health["host"], health["version"], health["pid"]) == ("WORKPC", "0.9.1", 77)
    assert health["advertised_tools"] == sorted((TERMINAL, READ_FILE))
    [client] = health["clients"]
    assert (client["device_id"], client["device_name"], client["serving"]) == (device_id, "WORKPC", True)
    [record] = health["recent_commands"]
    assert record["args"] == {"command": "deploy", "api_key": "[redacted]", "Authorization": "[redacted]",
                              "env": {"DB_PASSWORD": "[redacted]", "PATH": "/bin"},
                              "list": [{"session_token": "[redacted]"}]}
    assert (record["tool"], record["decision"], record["ok"], record["response_status"]) == (TERMINAL, "executed", True, 200)
    assert "done" in record["result_summary"]


async def test_system_ping_is_answered_with_pong_echoing_id_and_ts(relay):
    ws, _, _ = await desktop_client(relay)
    ping_id = await send_json(ws, "system", "ping", {"ts": 1787000000123})
    assert await receive_json(ws) == {"channel": "system", "type": "pong", "id": ping_id,
                                      "payload": {"ts": 1787000000123}}
    ping_id = await send_json(ws, "system", "ping", {})
    reply = await receive_json(ws)
    assert reply["id"] == ping_id and isinstance(reply["payload"]["ts"], float)


async def test_wrong_methods_and_unknown_routes(relay):
    status, _ = await http_json("POST", f"{relay.http}/desktop/health", {})
    assert status == 405
    status, _ = await http_json("GET", f"{relay.http}/desktop/{TERMINAL}")
    assert status == 405
    status, _ = await post_tool(relay, "bad$name", {})
    assert status == 404
