"""The watch stream's approval events match the typed IPC contract (core/apitypes.py)."""

from __future__ import annotations

import trio

from hermes_relay.agent.desktop.approvals import Approvals
from hermes_relay.core import api, apitypes


async def test_the_approval_events_the_agent_publishes_fit_their_types() -> None:
    approvals = Approvals(wall_clock=lambda: 1_800_000_000.0, env={"HERMES_RELAY_NOTIFY": "0"}, on_always=None)
    with approvals.subscribe() as events:
        async with trio.open_nursery() as nursery:
            async def ask() -> None:
                await approvals.request(url="ws://h:8767", tool="desktop_terminal", capability="commands",
                                        preview="ls", reason="Run desktop_terminal", request_id="r-1",
                                        expires_at=trio.current_time() + 30)

            nursery.start_soon(ask)
            requested = await events.receive()
            await approvals.decide(requested["id"], False, reason="no")
            resolved = await events.receive()
    for event in (requested, resolved):
        assert apitypes.check(event, apitypes.NOTIFIES[api.APPROVAL], where="approval") == []
    assert resolved["outcome"] == "denied"
