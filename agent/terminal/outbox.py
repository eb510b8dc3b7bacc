"""The notifies of one shell toward its CLI, in order, with the output bounded.

Putting never blocks (the link's reader calls it): output beyond ``MAX_OUTPUT`` bytes queued is dropped
whole and ``put_output`` says so, so the session asks the relay for a redraw (a slow CLI never stalls
the link; tmux's flood protection works the same way). ``shell.ack`` is coalesced (only the newest
marks wait) and goes ahead of everything else (the CLI takes the highest marks it heard, in any order);
``marks_sent`` waits until the newest marks are on the CLI's connection (the session's input toward the
reference waits for it: see agent/terminal/session.py). ``shell.link`` is coalesced while only its
``queued`` count changes. A single task (``pump``) sends them through the call's context.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ...core import api

MAX_OUTPUT = 256 * 1024

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


class Outbox:
    def __init__(self) -> None:
        self._items: deque[tuple[str, dict[str, Any]]] = deque()
        self.output_bytes = 0
        self.dropped = 0  # output bytes dropped on overflow
        self._ready = trio.Event()
        self.closed = False
        self._marks: dict[str, Any] | None = None  # the newest shell.ack not yet sent
        self._marks_put = self._marks_done = 0  # how many marks were put / are on the CLI's connection
        self._marks_moved = trio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        self._ready.set()

    def put(self, method: str, params: dict[str, Any]) -> None:
        last = self._items[-1] if self._items else None
        if method == api.SHELL_ACK:  # only the newest marks matter, and they go first
            self._marks = params
            self._marks_put += 1
        elif last is not None and last[0] == method and method == api.SHELL_LINK and _same_link(last[1], params):
            self._items[-1] = (method, params)  # only the newest queued count matters
        else:  # acks coalesce and the rest is rare (attach, link state, notices): only output is bounded
            self._items.append((method, params))
        self._wake()

    def put_output(self, data: bytes, seq_end: int) -> bool:
        """Queue output; False when the queue overflowed and every queued output was dropped (ask a redraw)."""
        if self.output_bytes + len(data) > MAX_OUTPUT:
            kept = deque(item for item in self._items if item[0] != api.SHELL_OUTPUT)
            self.dropped += self.output_bytes + len(data)
            self._items = kept
            self.output_bytes = 0
            self._wake()
            return False
        self._items.append((api.SHELL_OUTPUT, {"d": data, "seq_end": seq_end}))
        self.output_bytes += len(data)
        self._wake()
        return True

    def close(self) -> None:
        """Nothing more will be put (or the CLI is gone): ``pump`` returns once the queue is sent, and
        ``marks_sent`` waits no more."""
        self.closed = True
        self._wake()
        self._marks_moved.set()

    async def marks_sent(self) -> None:
        """Wait until every mark put so far is on the CLI's connection (or the outbox is closed)."""
        while self._marks_done < self._marks_put and not self.closed:
            await self._marks_moved.wait()

    async def pump(self, notify: Notify) -> None:
        while True:
            while self._items or self._marks is not None:
                if self._marks is not None:
                    marks, self._marks, put = self._marks, None, self._marks_put
                    await notify(api.SHELL_ACK, marks)
                    self._marks_done = put
                    self._marks_moved.set()
                    self._marks_moved = trio.Event()
                    continue
                method, params = self._items.popleft()
                if method == api.SHELL_OUTPUT:
                    self.output_bytes -= len(params["d"])
                await notify(method, params)
            if self.closed:
                return
            self._ready = trio.Event()
            await self._ready.wait()


def _same_link(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("state"), a.get("route"), a.get("reason")) == (b.get("state"), b.get("route"), b.get("reason"))
