"""No request body and no client answer stops the relay's desktop channel (issue #18 item 1, relay part).

A real relay on loopback with a scripted desktop client that echoes every command's arguments back as
its result. Hypothesis drives ``POST /desktop/<tool>`` from a worker thread with arbitrary bodies: any
JSON value (lone surrogates and every other code point included), arbitrary bytes, deep nesting. Every
request gets an HTTP answer that is a JSON object; an accepted call comes back with exactly the
arguments sent; and afterwards an ordinary call still works.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relay_desktop_clients import READ_FILE, answer, desktop_client, next_command, post_tool

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # lone surrogates too
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12)
ARGS = st.dictionaries(ANY_TEXT.filter(lambda k: k not in ("device", "device_id")), JSON_VALUES, max_size=5)
DEEP = st.integers(min_value=90, max_value=100_000).map(lambda n: ("[" * n + "]" * n).encode())
BODIES = (ARGS.map(lambda a: ("args", a)) | JSON_VALUES.map(lambda v: ("any", v))
          | st.binary(max_size=200).map(lambda b: ("raw", b)) | DEEP.map(lambda b: ("raw", b))
          | st.just(("raw", b'{"path": "\\udce9", "n": 1' + b"0" * 5000 + b"}")))


@pytest.fixture
def relay_test_guard() -> float:
    return 60.0


async def echo(ws: Any) -> None:
    """Answer every command with its own arguments (as a client that returns what it read)."""
    while True:
        command = await next_command(ws)
        await answer(ws, command["payload"]["request_id"], command["payload"]["args"])


def post(port: int, body: bytes) -> tuple[int, Any]:
    """A blocking POST from the worker thread: (status, decoded JSON). Raises when no answer arrives."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", f"/desktop/{READ_FILE}", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


async def test_any_body_or_answer_gets_an_answer_and_the_channel_keeps_working(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC")

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(BODIES)
    def one_request(case: tuple[str, Any]) -> None:
        kind, value = case
        body = json.dumps(value).encode() if kind != "raw" else value
        status, reply = post(relay.info.port, body)
        assert isinstance(reply, dict) and "ok" in reply, (status, reply)
        if kind == "args":
            assert status == 200, reply
            assert reply["result"] == value  # every code point made the round trip
        elif status != 200:
            assert status in (400, 404) and reply["ok"] is False and reply["error"], reply

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo, ws)
        await trio.to_thread.run_sync(one_request)
        status, body = await post_tool(relay, READ_FILE, {"path": "/etc/hostname"})
        assert (status, body["result"]) == (200, {"path": "/etc/hostname"})
        nursery.cancel_scope.cancel()


async def test_a_client_answer_too_deep_to_encode_fails_that_call_only(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC")
    deep: Any = "x"
    for _ in range(500):
        deep = [deep]
    async with trio.open_nursery() as nursery:
        async def answer_deep() -> None:
            command = await next_command(ws)
            await ws.send_message(json.dumps({"channel": "desktop", "type": "desktop.response", "id": "r",
                                              "payload": {"request_id": command["payload"]["request_id"],
                                                          "ok": True, "result": deep}}))
        nursery.start_soon(answer_deep)
        status, body = await post_tool(relay, READ_FILE, {"path": "a"})
    assert status == 200 and body["ok"] is False and "nests more than" in body["error"], body
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo, ws)
        status, body = await post_tool(relay, READ_FILE, {"path": "\udce9"})
        assert (status, body["result"]) == (200, {"path": "\udce9"})
        nursery.cancel_scope.cancel()
