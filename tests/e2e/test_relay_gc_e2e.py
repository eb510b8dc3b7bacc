"""The relay server's collector policy (relay/gcpolicy.py), on a real relay process: held connections are
frozen out of full collections, and closing them gives back what was frozen for them (no leak)."""

from __future__ import annotations

import pytest
import trio
from helpers import auth_frame, http_json, receive_json, ws_connect
from procs import RelayProc

pytestmark = pytest.mark.integration

HELD = 150
PER_CONNECTION = 30  # tracked objects an idle authenticated connection keeps at least (~57 measured)
# What a closed one may leave frozen for a while, all of it still referenced and freed when due: its
# heartbeat queue entry (a tuple and its Beat), and trio's deadline heap entry of its authentication
# timeout (a scope and a tuple, kept until the deadline passes or trio prunes the heap): ~4 measured. A
# reference cycle left behind stays frozen (wsproto's parser was one: ~12 per connection); a leaked
# connection is ~50 objects.
LEFT_PER_CONNECTION = 8


async def _gc(relay: RelayProc) -> dict:
    status, health = await http_json("GET", f"{relay.http}/health")
    assert status == 200 and "frozen" not in health["gc"]  # counting them walks them all: loopback only
    status, info = await http_json("GET", f"{relay.http}/relay/info")
    assert status == 200
    return {**info["gc"], "connections": health["connections"]}


async def _next_tick(relay: RelayProc, after: dict, key: str = "freezes") -> dict:
    """Poll /health until the policy has ticked once more (it ticks once a second when there is work)."""
    with trio.fail_after(20):
        while True:
            now = await _gc(relay)
            if now[key] > after[key]:
                return now
            await trio.sleep(0.1)


async def test_held_connections_are_frozen_and_closing_them_leaves_nothing_frozen(relay_proc):
    relay = relay_proc
    token = None
    async with trio.open_nursery() as nursery:
        code = relay.mint_code()
        first = await ws_connect(relay.url, nursery=nursery)
        await first.send_message(auth_frame({"pairing_code": code, "device_name": "gc"}))
        token = (await receive_json(first))["payload"]["session_token"]
        await first.aclose()
        before = await _gc(relay)
        while before["connections"]:
            before = await _gc(relay)
        before = await _next_tick(relay, before)  # the pairing socket's own objects are frozen or gone
        held = []
        for _ in range(HELD):
            ws = await ws_connect(relay.url, nursery=nursery)
            await ws.send_message(auth_frame({"session_token": token}))
            assert (await receive_json(ws))["type"] == "auth.ok"
            held.append(ws)
        frozen = await _next_tick(relay, before)
        assert frozen["connections"] == HELD
        assert frozen["frozen"] - before["frozen"] >= HELD * PER_CONNECTION
        assert frozen["collections"][2] >= 1 and frozen["worst_full_pause_ms"] > 0  # the ticks collect, timed
        for ws in held:
            await ws.aclose()
        with trio.fail_after(20):
            while (after := await _gc(relay))["connections"]:
                await trio.sleep(0.1)
        after = await _gc(relay)
        assert after["frozen"] - before["frozen"] <= HELD * LEFT_PER_CONNECTION, (before, frozen, after)
        nursery.cancel_scope.cancel()
