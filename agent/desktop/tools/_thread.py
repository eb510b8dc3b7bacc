"""Blocking tool work off the event loop, stoppable, on threads of its own.

The worker receives a ``threading.Event`` and checks it between units of work (a chunk, a file);
when the call is cancelled the caller stops waiting at once and the event is set, so the thread
ends at its next check instead of running on after the call's deadline.

Tool threads draw from their own limiter (``MAX_TOOL_THREADS``), never from trio's default one that
pairing, the store and the policy use: a thread stuck in a system call (a FIFO, a hung network
mount) keeps its token after its call is abandoned, and such threads must not starve the rest of
the agent. When every tool token is held, a call waits ``BUSY_WAIT`` seconds and then answers
"busy" instead of queueing until its deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Final, TypeVar

import trio
from trio.lowlevel import RunVar

from ....core.desktop import ToolError

T = TypeVar("T")

MAX_TOOL_THREADS: Final = 16  # below trio's default 40, so stuck tool threads leave the agent its own
BUSY_WAIT: Final = 2.0  # seconds a call waits for a tool thread before answering busy


class Stopped(Exception):
    """Raised inside a worker that saw its stop event."""


class ToolLimiter:
    """A CapacityLimiter that answers "busy" (a ToolError) after ``BUSY_WAIT`` instead of waiting on."""

    def __init__(self, total: int) -> None:
        self.inner = trio.CapacityLimiter(total)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        try:  # a free token costs no scheduler pass (to_thread.run_sync checked for cancellation just before)
            self.inner.acquire_on_behalf_of_nowait(borrower)
            return
        except trio.WouldBlock:
            pass
        with trio.move_on_after(BUSY_WAIT):
            await self.inner.acquire_on_behalf_of(borrower)
            return
        raise ToolError(f"busy: all {int(self.inner.total_tokens)} tool threads are still working (a file or "
                        "device that does not answer keeps one until it does); try again later")

    def release_on_behalf_of(self, borrower: object) -> None:
        self.inner.release_on_behalf_of(borrower)


_LIMITER: RunVar[ToolLimiter] = RunVar("hermes_relay_tool_limiter")


def limiter() -> ToolLimiter:
    """This trio run's tool limiter (one per run: an abandoned thread's token never leaks into another)."""
    try:
        return _LIMITER.get()
    except LookupError:
        made = ToolLimiter(MAX_TOOL_THREADS)
        _LIMITER.set(made)
        return made


def check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Stopped


async def run(fn: Callable[..., T], *args: Any) -> T:
    stop = threading.Event()
    try:
        return await trio.to_thread.run_sync(
            partial(fn, stop, *args), abandon_on_cancel=True, limiter=limiter()  # type: ignore[arg-type]
        )
    except Stopped as exc:
        raise ToolError("stopped") from exc
    finally:
        stop.set()
