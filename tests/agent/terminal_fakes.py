"""Fakes for one TerminalSession (agent/terminal/session.py) under trio's autojump clock: a port that records
what the agent sends, a session run as ``shell.open`` runs it with its notifies recorded, and the relay's
``terminal.attached`` payloads.

Only the connection is fake: the session, its ledger, outbox and timers are the real ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from hermes_relay.agent.terminal.session import State, TerminalSession
from hermes_relay.agent.terminal.wire import ShellOptions
from hermes_relay.core import rpc
from hermes_relay.core.errors import ConnectionLostError

URL = "ws://relay.test:8767"
STREAM = "s" * 22


class FakePort:
    """A connection that records every envelope the session sends."""

    def __init__(self, label: str = "LAN"):
        self.url = URL
        self.route_url = URL
        self.route_label = label
        self._send, self.out = trio.open_memory_channel[dict[str, Any]](100_000)
        self.checks = 0
        self.checked = trio.Event()
        self.closed = False
        self.log: list[dict[str, Any]] = []

    async def send(self, envelope: dict[str, Any]) -> None:
        if self.closed:
            raise ConnectionLostError("closed")
        self.log.append(envelope)
        self._send.send_nowait(envelope)

    def check(self) -> None:
        self.checks += 1
        self.checked.set()

    async def next(self) -> dict[str, Any]:
        return await self.out.receive()


class Shell:
    """A session run as shell.open runs it, with its notifies recorded and its CLI inbox open."""

    def __init__(self, **options: Any):
        params = {"session": "main", "cols": 80, "rows": 24, "stream": STREAM, "raw": True, **options}
        self.pings: list[tuple[str, Any]] = []
        self.session = TerminalSession(URL, ShellOptions.parse(params),
                                       on_ping=lambda port, msg_id, s: self.pings.append((msg_id, port)))
        self.notifies: list[tuple[float, str, dict[str, Any]]] = []
        self.inbox_send, self.inbox = trio.open_memory_channel[rpc.Notify](64)
        self.result: dict[str, Any] | None = None
        self.ended = trio.Event()
        self.gate: trio.Event | None = None  # set: the CLI reads nothing until it is set

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.notifies.append((trio.current_time(), method, params))

    async def run(self) -> None:
        self.result = await self.session.run(self.notify, self.inbox)
        self.ended.set()

    def of(self, method: str) -> list[dict[str, Any]]:
        return [p for _, m, p in self.notifies if m == method]


@asynccontextmanager
async def running(shell: Shell) -> AsyncIterator[trio.Nursery]:
    """``shell`` served (as shell.open serves it) for the block; the block's end waits for the shell to end."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shell.run)
        yield nursery


def ours(*, in_seq: int = 0, out_seq: int = 0, resumed: bool = False, gap: bool = False) -> dict[str, Any]:
    """Our relay's ``terminal.attached.resume``."""
    return {"v": 1, "stream": STREAM, "in_seq": in_seq, "out_seq": out_seq, "resumed": resumed, "gap": gap}


def attached(port: FakePort, shell: Shell, **payload: Any) -> None:
    shell.session.on_message(port, "terminal.attached", {"session_name": "main", "pid": 1, "shell": "/bin/sh",
                                                         "cols": 80, "rows": 24, "tmux_available": True,
                                                         "reattach": False, **payload})


async def connect(shell: Shell, port: FakePort, **payload: Any) -> dict[str, Any]:
    """The session connects on ``port``, sends its attach, and the relay answers ``terminal.attached``."""
    shell.session.connected(port)
    attach = await port.next()
    assert attach["type"] == "terminal.attach"
    await answer(shell, port, **payload)
    return attach


async def answer(shell: Shell, port: FakePort, **payload: Any) -> None:
    """The relay answers the attach the session sent on ``port``; the session is live then."""
    attached(port, shell, **payload)
    await wait_for(lambda: shell.session.state is State.LIVE)


async def wait_for(condition: Any) -> None:
    with trio.fail_after(600):  # virtual seconds: a condition that never comes fails instead of spinning on
        while not condition():
            await trio.sleep(0.001)  # virtual time (autojump): a poll, never a wall-clock wait


def inputs(port: FakePort) -> list[dict[str, Any]]:
    return [e["payload"] for e in port.log if e["type"] == "terminal.input"]
