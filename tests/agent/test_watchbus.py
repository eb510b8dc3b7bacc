"""agent/watchbus.py: a watch client sees every relay's state, then every change, and misses none made
while its first states are worked out (that takes a read of the paused file in a worker thread)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import trio

from hermes_relay.agent import watchbus
from hermes_relay.agent.ipc_server import CallContext
from hermes_relay.core import api, rpc


class _NoApprovals:
    def list(self) -> list[dict[str, Any]]:
        return []

    @contextmanager
    def subscribe(self) -> Any:
        send, receive = trio.open_memory_channel[Any](1)
        with send, receive:
            yield receive


async def test_a_change_made_while_the_first_states_are_worked_out_comes_after_them(autojump_clock) -> None:
    """The agent paused a pairing during the watch's read of the paused file: the read missed it, and the
    client, not subscribed yet, missed the change too and waited for a state that never came."""
    bus = watchbus.WatchBus()
    seen: list[dict[str, Any]] = []
    done = trio.Event()

    async def send(wire: Any) -> None:
        message = rpc.parse_message(wire)
        assert isinstance(message, rpc.Notify) and message.method == api.STATE
        seen.append(message.params)
        if message.params["state"] == api.PAUSED:
            done.set()

    ctx = CallContext(send)

    async def initial() -> list[dict[str, Any]]:
        connected = {"url": "ws://r:1", "state": api.CONNECTED}  # as the links were when the call came
        await trio.sleep(1)  # the paused file's read, in a worker thread
        bus.publish({"url": "ws://r:1", "state": api.PAUSED})  # meanwhile another client removed the pairing
        return [connected]  # (the read came too early to find it paused)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchbus.stream, bus, ctx, initial, _NoApprovals())
        with trio.fail_after(5):
            await done.wait()
        ctx.closed.set()
    assert [s["state"] for s in seen] == [api.CONNECTED, api.PAUSED]
