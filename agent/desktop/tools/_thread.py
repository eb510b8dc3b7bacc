"""Blocking file work off the event loop, stoppable: a cancelled call tells its thread to stop.

The worker receives a ``threading.Event`` and checks it between units of work (a chunk, a file);
when the call is cancelled the caller stops waiting at once and the event is set, so the thread
ends at its next check instead of running on after the call's deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

from hermes_relay.core.desktop import ToolError

T = TypeVar("T")


class Stopped(Exception):
    """Raised inside a worker that saw its stop event."""


def check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Stopped


async def run(fn: Callable[..., T], *args: Any) -> T:
    stop = threading.Event()
    try:
        return await trio.to_thread.run_sync(partial(fn, stop, *args), abandon_on_cancel=True)
    except Stopped as exc:
        raise ToolError("stopped") from exc
    finally:
        stop.set()
