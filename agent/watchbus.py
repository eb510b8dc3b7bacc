"""The watch bus: every ``watch`` client's channel, fed each relay's state as it changes.

A slow client misses intermediate states and never blocks the links; a client that left is dropped.
``stream`` is the ``watch`` IPC call: every relay's state first, then each change, and the approval
events, until the client leaves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import trio

from ..core import api
from .ipc_server import CallContext

State = dict[str, Any]


class Approvals(Protocol):
    def list(self) -> list[dict[str, Any]]: ...
    def subscribe(self) -> Any: ...  # a context manager over an async iterator of approval events


class WatchBus:
    def __init__(self) -> None:
        self.subscribers: set[trio.MemorySendChannel[State]] = set()

    def add(self, chan: trio.MemorySendChannel[State]) -> None:
        self.subscribers.add(chan)

    def discard(self, chan: trio.MemorySendChannel[State]) -> None:
        self.subscribers.discard(chan)

    def publish(self, state: State) -> None:
        for chan in list(self.subscribers):
            try:
                chan.send_nowait(state)
            except trio.WouldBlock:  # a slow watcher misses intermediate states, never blocks links
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.subscribers.discard(chan)

    @contextmanager
    def subscription(self, size: int = 64) -> Iterator[trio.MemoryReceiveChannel[State]]:
        send, receive = trio.open_memory_channel[State](size)
        self.add(send)
        try:
            yield receive
        finally:
            self.discard(send)


async def stream(bus: WatchBus, ctx: CallContext, initial: Callable[[], Awaitable[list[State]]],
                 approvals: Approvals) -> None:
    """The ``watch`` call: ``initial()`` (every relay's state), then each change and the approval events,
    until the client leaves. The client is subscribed before ``initial`` is worked out: a change made
    while it is (it may wait for a read) comes after it, never lost between the two."""
    with bus.subscription() as receive:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_closed, ctx, nursery.cancel_scope)
            nursery.start_soon(_forward_approvals, ctx, approvals)
            try:
                for state in await initial():
                    await ctx.notify(api.STATE, state)
                async with receive:
                    async for state in receive:
                        await ctx.notify(api.STATE, state)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()


async def _forward_approvals(ctx: CallContext, approvals: Approvals) -> None:
    """The watch stream's approval events: every pending request first, then each new one and outcome."""
    try:
        with approvals.subscribe() as events:
            for item in approvals.list():
                await ctx.notify(api.APPROVAL, {"event": "approval.requested", **item})
            async for event in events:
                await ctx.notify(api.APPROVAL, event)
    except (trio.BrokenResourceError, trio.ClosedResourceError):  # the client left
        pass


async def _until_closed(ctx: CallContext, scope: trio.CancelScope) -> None:
    await ctx.closed.wait()
    scope.cancel()
