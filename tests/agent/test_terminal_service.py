"""The terminal service (agent/terminal/service.py) over one recorded connection, under the autojump clock:
routing by session name and pongs by id, a planned move that waits for input in flight to be acknowledged
and then detaches (the reference keeps no stale tmux client), and ours not detached (it resumes)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from terminal_fakes import STREAM, URL, FakePort

from hermes_relay.agent.terminal.service import TerminalService
from hermes_relay.agent.terminal.session import State
from hermes_relay.core import api, rpc
from hermes_relay.core.errors import UsageError


async def resolve(remote: str | None) -> str:
    return URL


async def serve(service: TerminalService, nursery: trio.Nursery) -> tuple[FakePort, trio.MemorySendChannel[dict[str, Any]]]:
    port = FakePort()
    send, receive = trio.open_memory_channel[dict[str, Any]](100)
    nursery.start_soon(service.serve_link, port, receive)
    await trio.sleep(0)
    return port, send


async def open_shell(service: TerminalService, nursery: trio.Nursery, name: str = "main") -> tuple[trio.MemorySendChannel[rpc.Notify], list[Any]]:
    inbox_send, inbox = trio.open_memory_channel[rpc.Notify](64)
    results: list[Any] = []

    async def notify(method: str, params: dict[str, Any]) -> None:
        pass

    async def run() -> None:
        results.append(await service.open({"session": name, "stream": STREAM, "raw": True}, notify, inbox))

    nursery.start_soon(run)
    return inbox_send, results


def relay(typ: str, payload: dict[str, Any], channel: str = "terminal", msg_id: str = "r") -> dict[str, Any]:
    return {"channel": channel, "type": typ, "id": msg_id, "payload": payload}


async def test_a_planned_move_waits_for_the_pong_then_detaches_the_reference_shell(autojump_clock: Any) -> None:
    service = TerminalService(resolve)
    async with trio.open_nursery() as nursery:
        port, inbound = await serve(service, nursery)
        inbox, results = await open_shell(service, nursery)
        attach = await port.next()
        await inbound.send(relay("terminal.attached", {"session_name": "main", "tmux_available": True}, msg_id=attach["id"]))
        await inbox.send(rpc.Notify(api.SHELL_INPUT, {"seq": 0, "d": b"make\r"}))
        assert (await port.next())["payload"]["data"] == "make\r"
        ping = await port.next()
        assert ping["id"] == "in-5" and service.attached(URL)
        left = trio.Event()

        async def leave() -> None:
            await service.leave(URL, drain=True)
            left.set()

        nursery.start_soon(leave)
        await trio.sleep(0.3)
        assert not left.is_set() and [e["type"] for e in port.log][-1] == "ping"  # waiting for the ack
        await inbound.send(relay("pong", {}, channel="system", msg_id="in-5"))
        detach = await port.next()
        assert (detach["type"], detach["payload"]) == ("terminal.detach", {"session_name": "main"})
        await left.wait()
        (session,) = service.sessions.values()
        assert session.state is State.SUSPENDED and session.ledger.acked == 5
        await inbound.aclose()  # the connection ends: no second detach
        await trio.sleep(0.1)
        assert [e["type"] for e in port.log].count("terminal.detach") == 1
        await inbox.send(rpc.Notify(api.SHELL_DETACH, {}))
    assert results == [{"reason": "detached", "code": None}]


async def test_our_shell_is_not_detached_on_a_planned_move_and_pongs_route_by_id(autojump_clock: Any) -> None:
    service = TerminalService(resolve)
    async with trio.open_nursery() as nursery:
        port, inbound = await serve(service, nursery)
        ours, _ = await open_shell(service, nursery, "a")
        reference, _ = await open_shell(service, nursery, "b")
        for _ in range(2):
            attach = await port.next()
            name = attach["payload"]["session_name"]
            payload: dict[str, Any] = {"session_name": name, "tmux_available": True}
            if name == "a":
                payload["resume"] = {"v": 1, "stream": STREAM, "in_seq": 0, "out_seq": 0, "resumed": False, "gap": False}
            await inbound.send(relay("terminal.attached", payload))
        await reference.send(rpc.Notify(api.SHELL_INPUT, {"seq": 0, "d": b"x"}))
        assert (await port.next())["payload"] == {"session_name": "b", "data": "x"}
        assert (await port.next())["id"] == "in-1"
        await inbound.send(relay("pong", {}, channel="system", msg_id="in-1"))
        await inbound.send(relay("terminal.output", {"session_name": "a", "data": "hi", "seq_end": 2, "in_seq": 0}))
        await trio.sleep(0.1)
        assert service.sessions[(URL, "b")].ledger.acked == 1
        assert service.sessions[(URL, "a")].out_seq == 2
        await service.leave(URL, drain=True)
        assert [e["type"] for e in port.log].count("terminal.detach") == 1  # only the reference's
        assert service.sessions[(URL, "a")].state is State.LIVE
        nursery.cancel_scope.cancel()


async def test_a_connection_cancelled_under_a_reference_shell_detaches_it_first(autojump_clock: Any) -> None:
    service = TerminalService(resolve)
    async with trio.open_nursery() as nursery:
        port = FakePort()
        send, receive = trio.open_memory_channel[dict[str, Any]](100)
        link_scope = trio.CancelScope()

        async def link() -> None:
            with link_scope:  # the agent stopping cancels the link's connection
                await service.serve_link(port, receive)

        nursery.start_soon(link)
        inbox, results = await open_shell(service, nursery)
        await port.next()
        await send.send(relay("terminal.attached", {"session_name": "main", "tmux_available": True}))
        await trio.sleep(0.1)
        link_scope.cancel()
        detach = await port.next()
        assert (detach["type"], detach["payload"]) == ("terminal.detach", {"session_name": "main"})
        await trio.sleep(0.1)
        assert not service.ports and service.sessions[(URL, "main")].state is State.SUSPENDED
        await inbox.send(rpc.Notify(api.SHELL_DETACH, {}))
    assert results == [{"reason": "detached", "code": None}]


async def test_sessions_kill_of_a_shell_open_here_ends_it_as_killed(autojump_clock: Any) -> None:
    service = TerminalService(resolve)
    async with trio.open_nursery() as nursery:
        port, inbound = await serve(service, nursery)
        _, results = await open_shell(service, nursery)
        await port.next()
        await inbound.send(relay("terminal.attached", {"session_name": "main", "tmux_available": True}))
        killed: list[Any] = []

        async def kill() -> None:
            killed.append(await service.kill(None, "main"))

        nursery.start_soon(kill)
        assert (await port.next())["type"] == "terminal.kill"
        await inbound.send(relay("terminal.detached", {"session_name": "main", "reason": "pty closed"}))
        while not results or not killed:
            await trio.sleep(0.01)
        await inbound.aclose()
    assert killed == [{"reason": "pty closed"}]
    assert results == [{"reason": "killed", "code": None}]


async def test_a_fifth_shell_on_a_reference_connection_is_refused_with_a_hint(autojump_clock: Any) -> None:
    service = TerminalService(resolve)
    async with trio.open_nursery() as nursery:
        port, inbound = await serve(service, nursery)
        for name in "abcd":
            await open_shell(service, nursery, name)
            attach = await port.next()
            await inbound.send(relay("terminal.attached", {"session_name": attach["payload"]["session_name"],
                                                           "tmux_available": True}))
        await trio.sleep(0.1)
        inbox_send, inbox = trio.open_memory_channel[rpc.Notify](1)

        async def notify(method: str, params: dict[str, Any]) -> None:
            pass

        with pytest.raises(UsageError) as refused:
            await service.open({"session": "e", "stream": STREAM}, notify, inbox)
        assert "4" in refused.value.message and "sessions kill" in (refused.value.hint or "")
        nursery.cancel_scope.cancel()
